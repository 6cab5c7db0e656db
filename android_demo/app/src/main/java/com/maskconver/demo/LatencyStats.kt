package com.maskconver.demo

/** Rolling p50 of the last [window] frames' stage times, and frames per second over the last second. */
class LatencyStats(private val window: Int = 60) {
    private val pre = DoubleArray(window)
    private val infer = DoubleArray(window)
    private val post = DoubleArray(window)
    private val total = DoubleArray(window)
    private var n = 0
    private val stamps = LongArray(256)
    private var stampCount = 0
    var frames = 0L
        private set

    @Synchronized
    fun add(r: FrameResult, nowNanos: Long) {
        val i = n % window
        pre[i] = r.preMs
        infer[i] = r.inferMs
        post[i] = r.postMs
        total[i] = r.totalMs
        n++
        frames++
        stamps[stampCount % stamps.size] = nowNanos
        stampCount++
    }

    private fun median(a: DoubleArray): Double {
        val m = minOf(n, window)
        if (m == 0) return Double.NaN
        val c = a.copyOf(m)
        c.sort()
        return if (m % 2 == 1) c[m / 2] else 0.5 * (c[m / 2 - 1] + c[m / 2])
    }

    /** Frames finished within the last second before [nowNanos]. */
    @Synchronized
    fun fps(nowNanos: Long): Double {
        var count = 0
        for (k in 0 until minOf(stampCount, stamps.size)) {
            if (nowNanos - stamps[k] <= 1_000_000_000L) count++
        }
        return count.toDouble()
    }

    @Synchronized
    fun summary(nowNanos: Long): String =
        "p50 %.1f ms (pre %.1f, infer %.1f, decode %.1f) | %.1f FPS".format(
            median(total), median(pre), median(infer), median(post), fps(nowNanos)
        )
}
