package com.maskconver.demo

import androidx.camera.core.ImageProxy

/**
 * CameraX RGBA_8888 frames -> upright packed RGB bytes (rotation applied, alpha dropped), into a reused
 * buffer. One converter per analysis thread.
 */
class FrameConverter {
    var rgb = ByteArray(0)
        private set
    var height = 0
        private set
    var width = 0
        private set
    private var row = ByteArray(0)

    fun convert(image: ImageProxy) {
        val plane = image.planes[0]
        val buf = plane.buffer
        val rowStride = plane.rowStride
        val pixelStride = plane.pixelStride
        val sw = image.width
        val sh = image.height
        val rot = image.imageInfo.rotationDegrees
        val (dh, dw) = if (rot == 90 || rot == 270) Pair(sw, sh) else Pair(sh, sw)
        if (rgb.size != dh * dw * 3) rgb = ByteArray(dh * dw * 3)
        if (row.size < rowStride) row = ByteArray(rowStride)
        height = dh
        width = dw
        val out = rgb
        for (y in 0 until sh) {
            buf.position(y * rowStride)
            buf.get(row, 0, minOf(rowStride, buf.remaining()))
            for (x in 0 until sw) {
                // source (x, y) -> upright (dx, dy)
                val dx: Int
                val dy: Int
                when (rot) {
                    90 -> { dx = sh - 1 - y; dy = x }
                    180 -> { dx = sw - 1 - x; dy = sh - 1 - y }
                    270 -> { dx = y; dy = sw - 1 - x }
                    else -> { dx = x; dy = y }
                }
                val s = x * pixelStride
                val o = (dy * dw + dx) * 3
                out[o] = row[s]
                out[o + 1] = row[s + 1]
                out[o + 2] = row[s + 2]
            }
        }
        buf.rewind()
    }
}
