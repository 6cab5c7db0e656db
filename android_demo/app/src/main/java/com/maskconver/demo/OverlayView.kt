package com.maskconver.demo

import android.content.Context
import android.graphics.Bitmap
import android.graphics.Canvas
import android.graphics.Color
import android.graphics.Paint
import android.graphics.Rect
import android.graphics.RectF
import android.util.AttributeSet
import android.view.View
import com.maskconver.decoder.PanopticResult

/**
 * Draws the latest segmentation over the camera preview: segment colours (the model's category colours,
 * things shaded per instance), each segment's name at its box centre. The frame is fitted to the view like
 * the FIT_CENTER preview, so both line up.
 */
class OverlayView(context: Context, attrs: AttributeSet?) : View(context, attrs) {
    private class Frame(val bitmap: Bitmap, val labels: List<Pair<String, RectF>>)

    @Volatile
    private var frame: Frame? = null
    private var pixels = IntArray(0)
    private val bitmaps = arrayOfNulls<Bitmap>(2)
    private var next = 0
    private val maskPaint = Paint(Paint.FILTER_BITMAP_FLAG)
    private val textPaint = Paint(Paint.ANTI_ALIAS_FLAG).apply {
        color = Color.WHITE
        textSize = 34f
        setShadowLayer(4f, 0f, 0f, Color.BLACK)
    }
    private val dst = RectF()

    /**
     * Render [r] (called on the analysis thread): builds the ARGB mask in one of two alternating bitmaps and
     * posts a redraw. [colors] 0xRRGGBB and [labels] by category id.
     */
    fun show(r: PanopticResult, colors: IntArray, labels: List<String>) {
        val w = r.width
        val h = r.height
        if (pixels.size != w * h) pixels = IntArray(w * h)
        var bmp = bitmaps[next]
        if (bmp == null || bmp.width != w || bmp.height != h) {
            bmp = Bitmap.createBitmap(w, h, Bitmap.Config.ARGB_8888)
            bitmaps[next] = bmp
        }
        next = 1 - next
        val cat = r.categoryMask
        val inst = r.instanceMask
        for (i in pixels.indices) {
            val c = cat[i]
            pixels[i] = if (c == 0) 0 else 0x8C000000.toInt() or shade(colors[c], inst[i])
        }
        bmp!!.setPixels(pixels, 0, w, 0, 0, w, h)
        val names = ArrayList<Pair<String, RectF>>()
        for (s in 0 until r.numSegments) {
            val b = r.segmentBbox
            val name = labels.getOrElse(r.segmentCategory[s]) { "class ${r.segmentCategory[s]}" }
            val text = "$name %.2f".format(r.segmentScore[s])
            names.add(Pair(text, RectF(b[4 * s].toFloat(), b[4 * s + 1].toFloat(), b[4 * s + 2].toFloat(), b[4 * s + 3].toFloat())))
        }
        frame = Frame(bmp, names)
        postInvalidate()
    }

    /** Things: the category colour, lighter or darker by instance so neighbours of one class differ. */
    private fun shade(rgb: Int, instance: Int): Int {
        if (instance == 0) return rgb
        val f = 0.75f + 0.1f * ((instance * 7) % 6)
        val r = minOf(255, (((rgb shr 16) and 0xFF) * f).toInt())
        val g = minOf(255, (((rgb shr 8) and 0xFF) * f).toInt())
        val b = minOf(255, ((rgb and 0xFF) * f).toInt())
        return (r shl 16) or (g shl 8) or b
    }

    override fun onDraw(canvas: Canvas) {
        super.onDraw(canvas)
        val f = frame ?: return
        val bw = f.bitmap.width.toFloat()
        val bh = f.bitmap.height.toFloat()
        val s = minOf(width / bw, height / bh)
        val ox = (width - bw * s) / 2f
        val oy = (height - bh * s) / 2f
        dst.set(ox, oy, ox + bw * s, oy + bh * s)
        canvas.drawBitmap(f.bitmap, null as Rect?, dst, maskPaint)
        for ((text, box) in f.labels) {
            val cx = ox + (box.left + box.right) / 2f * s
            val cy = oy + (box.top + box.bottom) / 2f * s
            canvas.drawText(text, cx - textPaint.measureText(text) / 2f, cy, textPaint)
        }
    }
}
