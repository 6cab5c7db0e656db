package com.maskconver.decoder

/**
 * One model output `[h, w, c]` (batch 1, row-major): float32 values, or int8 / uint8 codes with their TFLite
 * quantisation (`value = scale * (code - zeroPoint)`).
 */
class FeatureMap private constructor(
    val h: Int,
    val w: Int,
    val c: Int,
    val floats: FloatArray?,
    val codes: ByteArray?,
    val unsigned: Boolean,
    val scale: Float,
    val zeroPoint: Float
) {
    val quantized: Boolean get() = codes != null

    /** Integer code at flat index [i] (quantised maps only). */
    fun code(i: Int): Int {
        val b = codes!![i].toInt()
        return if (unsigned) b and 0xFF else b
    }

    /** Dequantised (or float) value at flat index [i]: `float32(scale) * (float32(code) - float32(zeroPoint))`. */
    fun value(i: Int): Float = if (floats != null) floats[i] else scale * (code(i).toFloat() - zeroPoint)

    companion object {
        private fun check(h: Int, w: Int, c: Int, n: Int, what: String) {
            if (h < 1 || w < 1 || c < 1 || h.toLong() * w * c != n.toLong()) {
                throw IllegalArgumentException("$what: ${n} values do not make a [$h, $w, $c] map")
            }
        }

        fun ofFloats(h: Int, w: Int, c: Int, data: FloatArray): FeatureMap {
            check(h, w, c, data.size, "float map")
            return FeatureMap(h, w, c, data, null, false, 1f, 0f)
        }

        /** int8 (or uint8 with [unsigned]) codes with `(scale, zeroPoint)`. */
        fun ofCodes(h: Int, w: Int, c: Int, data: ByteArray, scale: Float, zeroPoint: Float, unsigned: Boolean = false): FeatureMap {
            check(h, w, c, data.size, "quantised map")
            if (!(scale > 0f) || scale.isInfinite()) {
                throw IllegalArgumentException("quantisation scale must be a positive number, got $scale")
            }
            return FeatureMap(h, w, c, null, data, unsigned, scale, zeroPoint)
        }
    }
}

/**
 * Bilinear resize plan along one axis (TF `ResizeBilinear`, half-pixel centres, no antialiasing), exactly the
 * float32 arithmetic of the Python `axis_plan`: `src = (i + 0.5) * (in / out) - 0.5`, `i0 = max(floor, 0)`,
 * `i1 = min(ceil, in - 1)`, `lerp = src - floor(src)`, for output indices `0 until keep`. Runs: maximal
 * stretches of output indices with the same `(i0, i1)`.
 */
class AxisPlan(val inSize: Int, val outSize: Int, keep: Int = outSize) {
    val n: Int = keep
    val i0 = IntArray(keep)
    val i1 = IntArray(keep)
    val lerp = FloatArray(keep)
    val runStart: IntArray
    val runLen: IntArray

    init {
        if (inSize < 1 || outSize < 1) throw IllegalArgumentException("resize sizes must be positive ($inSize -> $outSize)")
        if (keep < 1 || keep > outSize) throw IllegalArgumentException("keep must be in 1..$outSize, got $keep")
        val scale = inSize.toFloat() / outSize.toFloat()
        var runs = 0
        for (i in 0 until keep) {
            val src = (i.toFloat() + 0.5f) * scale - 0.5f
            val fl = Math.floor(src.toDouble()).toFloat()
            i0[i] = maxOf(fl.toInt(), 0)
            i1[i] = minOf(Math.ceil(src.toDouble()).toInt(), inSize - 1)
            lerp[i] = src - fl
            if (i == 0 || i0[i] != i0[i - 1] || i1[i] != i1[i - 1]) runs++
        }
        runStart = IntArray(runs)
        runLen = IntArray(runs)
        var r = -1
        for (i in 0 until keep) {
            if (i == 0 || i0[i] != i0[i - 1] || i1[i] != i1[i - 1]) {
                r++
                runStart[r] = i
            }
            runLen[r]++
        }
    }
}
