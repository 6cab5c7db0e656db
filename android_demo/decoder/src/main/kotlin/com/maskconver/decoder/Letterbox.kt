package com.maskconver.decoder

/**
 * The reference letterbox of the Python runtime (`maskconver.runtime.preprocess.letterbox`): aspect-kept
 * bilinear resize to the top-left of the model input, bottom/right padded with the mean colour.
 *
 * Geometry (exact, float32 as TF computes it): `scale = min(h / H, w / W)`, scaled size
 * `round_half_even(H * scale), round_half_even(W * scale)`, at least 1.
 *
 * Resize: OpenCV `INTER_LINEAR` on uint8 (what the Python side calls), reproduced from its documented
 * fixed-point scheme: half-pixel source coordinates `(d + 0.5) * (src / dst) - 0.5`, 11-bit weights, a
 * horizontal pass into integers and a vertical pass that drops 4 bits, multiplies, keeps the high 16 bits and
 * rounds off 2 more; an exact 2x downscale is OpenCV's 2x2 average. The tests compare with cv2 byte for byte.
 */
object Letterbox {
    private const val COEF_BITS = 11
    private const val COEF_SCALE = 1 shl COEF_BITS

    /** `(scaledH, scaledW)` of an `imageH x imageW` image in an `h x w` input, and the float32 scale. */
    class Geometry(val scale: Float, val validH: Int, val validW: Int)

    fun geometry(imageH: Int, imageW: Int, h: Int, w: Int): Geometry {
        val s = minOf(h.toFloat() / imageH.toFloat(), w.toFloat() / imageW.toFloat())
        val sh = Math.rint((imageH.toFloat() * s).toDouble()).toInt()
        val sw = Math.rint((imageW.toFloat() * s).toDouble()).toInt()
        return Geometry(s, maxOf(sh, 1), maxOf(sw, 1))
    }

    /**
     * Letterbox packed RGB bytes `[imageH * imageW * 3]` into [out] `[h * w * 3]` (allocated if null or too
     * small); returns the geometry. [pad] is the (r, g, b) padding colour, default (124, 116, 104).
     */
    fun apply(
        rgb: ByteArray,
        imageH: Int,
        imageW: Int,
        h: Int,
        w: Int,
        out: ByteArray,
        pad: IntArray = intArrayOf(124, 116, 104)
    ): Geometry {
        if (rgb.size < imageH * imageW * 3) throw IllegalArgumentException("image buffer is smaller than ${imageH}x${imageW}x3")
        if (out.size < h * w * 3) throw IllegalArgumentException("output buffer is smaller than ${h}x${w}x3")
        val g = geometry(imageH, imageW, h, w)
        val sh = g.validH
        val sw = g.validW
        if (sh == imageH && sw == imageW) {
            for (y in 0 until sh) System.arraycopy(rgb, y * imageW * 3, out, y * w * 3, sw * 3)
        } else if (imageH == 2 * sh && imageW == 2 * sw) {
            halve(rgb, imageW, sh, sw, out, w)
        } else {
            bilinear(rgb, imageH, imageW, sh, sw, out, w)
        }
        val pr = pad[0].toByte()
        val pg = pad[1].toByte()
        val pb = pad[2].toByte()
        for (y in 0 until h) {
            val x0 = if (y < sh) sw else 0
            var o = (y * w + x0) * 3
            for (x in x0 until w) {
                out[o] = pr; out[o + 1] = pg; out[o + 2] = pb
                o += 3
            }
        }
        return g
    }

    /** Exact 2x downscale: rounded mean of each 2x2 block. */
    private fun halve(src: ByteArray, srcW: Int, dh: Int, dw: Int, out: ByteArray, outW: Int) {
        for (y in 0 until dh) {
            val r0 = 2 * y * srcW * 3
            val r1 = r0 + srcW * 3
            for (x in 0 until dw) {
                for (c in 0 until 3) {
                    val i = 6 * x + c
                    val s = (src[r0 + i].toInt() and 0xFF) + (src[r0 + i + 3].toInt() and 0xFF) +
                        (src[r1 + i].toInt() and 0xFF) + (src[r1 + i + 3].toInt() and 0xFF)
                    out[(y * outW + x) * 3 + c] = ((s + 2) shr 2).toByte()
                }
            }
        }
    }

    /**
     * Source index and 11-bit weights per destination index along one axis. Along x ([clamp]) a coordinate
     * outside the image snaps to the border pixel with weight 1; along y it keeps its weights and the rows
     * are clamped when fetched (OpenCV does the same; the rounding of the vertical pass depends on it).
     */
    private fun coefficients(srcSize: Int, dstSize: Int, idx: IntArray, a0: IntArray, a1: IntArray, clamp: Boolean) {
        val scale = 1.0 / (dstSize.toDouble() / srcSize)
        for (d in 0 until dstSize) {
            var f = ((d + 0.5) * scale - 0.5).toFloat()
            var s = Math.floor(f.toDouble()).toInt()
            f -= s
            if (clamp && s < 0) {
                f = 0f
                s = 0
            }
            if (clamp && s >= srcSize - 1) {
                f = 0f
                s = srcSize - 1
            }
            idx[d] = s
            a0[d] = Math.rint(((1f - f) * COEF_SCALE).toDouble()).toInt()
            a1[d] = Math.rint((f * COEF_SCALE).toDouble()).toInt()
        }
    }

    private fun bilinear(src: ByteArray, srcH: Int, srcW: Int, dh: Int, dw: Int, out: ByteArray, outW: Int) {
        val xi = IntArray(dw)
        val xa0 = IntArray(dw)
        val xa1 = IntArray(dw)
        val yi = IntArray(dh)
        val yb0 = IntArray(dh)
        val yb1 = IntArray(dh)
        coefficients(srcW, dw, xi, xa0, xa1, true)
        coefficients(srcH, dh, yi, yb0, yb1, false)
        val row0 = IntArray(dw * 3)
        val row1 = IntArray(dw * 3)
        var have0 = -1
        var have1 = -1
        for (y in 0 until dh) {
            val sy0 = minOf(maxOf(yi[y], 0), srcH - 1)
            val sy1 = minOf(maxOf(yi[y] + 1, 0), srcH - 1)
            if (have0 != sy0) {
                if (have1 == sy0) System.arraycopy(row1, 0, row0, 0, row0.size) else horizontal(src, srcW, sy0, xi, xa0, xa1, row0)
                have0 = sy0
            }
            if (have1 != sy1) {
                horizontal(src, srcW, sy1, xi, xa0, xa1, row1)
                have1 = sy1
            }
            val b0 = yb0[y]
            val b1 = yb1[y]
            val o = y * outW * 3
            for (i in 0 until dw * 3) {
                // (b0 * (r0 >> 4) >> 16) + (b1 * (r1 >> 4) >> 16), then round off 2 bits
                val v = (((b0 * (row0[i] shr 4)) shr 16) + ((b1 * (row1[i] shr 4)) shr 16) + 2) shr 2
                out[o + i] = (if (v < 0) 0 else if (v > 255) 255 else v).toByte()
            }
        }
    }

    private fun horizontal(src: ByteArray, srcW: Int, sy: Int, xi: IntArray, a0: IntArray, a1: IntArray, row: IntArray) {
        val base = sy * srcW * 3
        for (x in xi.indices) {
            val s0 = base + xi[x] * 3
            val s1 = if (xi[x] + 1 < srcW) s0 + 3 else s0
            for (c in 0 until 3) {
                row[x * 3 + c] = (src[s0 + c].toInt() and 0xFF) * a0[x] + (src[s1 + c].toInt() and 0xFF) * a1[x]
            }
        }
    }
}
