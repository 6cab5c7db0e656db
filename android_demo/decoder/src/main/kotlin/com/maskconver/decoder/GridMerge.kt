package com.maskconver.decoder

/**
 * Nearest-cell map of one output axis for the grid merge (the Python `grid_axis`, runtime/grid_merge.py): the
 * first [keep] output pixels of an axis whose [canvas] output pixels span [gridCells] grid cells. Output pixel
 * `i` (centre `i + 0.5`) lies in cell `((2 i + 1) * gridCells) / (2 * canvas)` (integer division).
 *
 * [cells] `[n]` the cells some output pixel falls into (ascending), [count] `[n]` output pixels per such cell,
 * [start] `[n]` the first output pixel of each; [index] `[keep]` the position in [cells] of every output pixel.
 */
class GridAxis(val gridCells: Int, val canvas: Int, val keep: Int) {
    val cells: IntArray
    val count: IntArray
    val start: IntArray
    val index = IntArray(keep)
    val n: Int get() = cells.size

    init {
        if (gridCells < 1 || keep < 1 || keep > canvas) {
            throw IllegalArgumentException("bad grid axis: $gridCells cells, canvas $canvas, keep $keep (need 1 <= keep <= canvas)")
        }
        val c = IntArray(minOf(keep, gridCells))
        val s = IntArray(c.size)
        var m = 0
        for (i in 0 until keep) {
            val cell = (((2L * i + 1) * gridCells) / (2L * canvas)).toInt()
            if (m == 0 || cell != c[m - 1]) {
                c[m] = cell
                s[m] = i
                m++
            }
            index[i] = m - 1
        }
        cells = c.copyOf(m)
        start = s.copyOf(m)
        count = IntArray(m) { (if (it + 1 < m) start[it + 1] else keep) - start[it] }
    }
}

/**
 * A grid merge as it runs over the used cells of [gy] x [gx] with [k] proposals: each cell's winner, and per
 * proposal the output pixels won, `count(p > 0.5)` in output pixels ([origArea], filled by the merge) and the
 * box of the cells won.
 */
internal class GridTally(k: Int, private val gy: GridAxis, private val gx: GridAxis) {
    val win = IntArray(gy.n * gx.n)
    val maskArea = LongArray(k)
    val origArea = LongArray(k)
    private val cx0 = IntArray(k) { gx.n }
    private val cy0 = IntArray(k) { gy.n }
    private val cx1 = IntArray(k) { -1 }
    private val cy1 = IntArray(k) { -1 }

    /** Cell ([j], [i]), covering [weight] output pixels, goes to proposal [best]. */
    fun won(j: Int, i: Int, best: Int, weight: Long) {
        win[j * gx.n + i] = best
        maskArea[best] += weight
        if (i < cx0[best]) cx0[best] = i
        if (i > cx1[best]) cx1[best] = i
        if (j < cy0[best]) cy0[best] = j
        if (j > cy1[best]) cy1[best] = j
    }

    /** The merge's result: boxes in output pixels (`bx0 = width`, `by0 = height`, `bx1 = by1 = 0` where nothing won). */
    fun result(): GridMergeResult {
        val k = maskArea.size
        val bx0 = IntArray(k)
        val by0 = IntArray(k)
        val bx1 = IntArray(k)
        val by1 = IntArray(k)
        for (q in 0 until k) {
            if (cx1[q] < 0) {
                bx0[q] = gx.keep
                by0[q] = gy.keep
                continue
            }
            bx0[q] = gx.start[cx0[q]]
            by0[q] = gy.start[cy0[q]]
            bx1[q] = gx.start[cx1[q]] + gx.count[cx1[q]]
            by1[q] = gy.start[cy1[q]] + gy.count[cy1[q]]
        }
        return GridMergeResult(win, maskArea, origArea, bx0, by0, bx1, by1)
    }
}

/** Per-proposal outcome of [GridMerge.merge]: areas in output pixels and boxes `[x0, x1) x [y0, y1)`. */
class GridMergeResult(
    val cellWinner: IntArray,
    val maskArea: LongArray,
    val originalArea: LongArray,
    val bx0: IntArray,
    val by0: IntArray,
    val bx1: IntArray,
    val by1: IntArray
)

/**
 * The real-time merge on the model's feature grid (`mask_resolution = "grid"`, a port of runtime/grid_merge.py):
 * the mask logits are not resized; the merge runs on the grid cells the output covers and every output pixel
 * takes the labels of the cell its centre falls into ([GridAxis]). The merge is the reference one (`p = sigmoid`,
 * winner `argmax p * score` first on ties in float32, `original_area = count(p > 0.5)`) with every cell counted
 * with the number of output pixels it covers, so areas, boxes and the keep test are exact for the blocky label
 * maps. `"grid2x"` / `"grid4x"`: the same on the grid bilinearly upsampled 2x / 4x first (the TF half-pixel
 * resize of the full path, [AxisPlan]). Cost `O(cells * K)`, no per-pixel work besides painting.
 */
object GridMerge {
    val MODES = listOf("full", "grid", "grid2x", "grid4x")

    /** Grid upsampling factor of a `maskResolution`: 0 for "full", 1, 2 or 4 for the grid modes. */
    fun factor(maskResolution: String): Int = when (maskResolution) {
        "full" -> 0
        "grid" -> 1
        "grid2x" -> 2
        "grid4x" -> 4
        else -> throw IllegalArgumentException("maskResolution must be one of $MODES, got '$maskResolution'")
    }

    /**
     * Logits of the used cells `[gy.n * gx.n * K]` from the grid's logits `[h * w * K]` upsampled by [factor]
     * (2 or 4): TF half-pixel bilinear to `factor * (h, w)`, the same float32 operations as the Python
     * `resize_bilinear` (`top = a + (b - a) * lx`, `bottom = c + (d - c) * lx`, `top + (bottom - top) * ly`).
     */
    fun upsampledLogits(logits: FloatArray, h: Int, w: Int, k: Int, factor: Int, gy: GridAxis, gx: GridAxis): FloatArray {
        val py = AxisPlan(h, h * factor, gy.cells[gy.n - 1] + 1)
        val px = AxisPlan(w, w * factor, gx.cells[gx.n - 1] + 1)
        val out = FloatArray(gy.n * gx.n * k)
        for (j in 0 until gy.n) {
            val sy = gy.cells[j]
            val r0 = py.i0[sy] * w
            val r1 = py.i1[sy] * w
            val ly = py.lerp[sy]
            for (i in 0 until gx.n) {
                val sx = gx.cells[i]
                val lx = px.lerp[sx]
                val a0 = (r0 + px.i0[sx]) * k
                val b0 = (r0 + px.i1[sx]) * k
                val c0 = (r1 + px.i0[sx]) * k
                val d0 = (r1 + px.i1[sx]) * k
                val ob = (j * gx.n + i) * k
                for (q in 0 until k) {
                    val a = logits[a0 + q]
                    val c = logits[c0 + q]
                    val top = a + (logits[b0 + q] - a) * lx
                    val bot = c + (logits[d0 + q] - c) * lx
                    out[ob + q] = top + (bot - top) * ly
                }
            }
        }
        return out
    }

    /**
     * Merge the used cells' logits `[gy.n * gx.n * K]` with proposal [scores] `[K]`: per cell the winner
     * (first on ties), per proposal the output pixels won, `count(p > 0.5)` in output pixels and the box of
     * its cells in output pixels (`bx0 = width`, `by0 = height`, `bx1 = by1 = 0` where nothing won).
     */
    fun merge(logits: FloatArray, k: Int, scores: FloatArray, gy: GridAxis, gx: GridAxis): GridMergeResult {
        val nx = gx.n
        val tally = GridTally(k, gy, gx)
        if (k > 0) {
            for (j in 0 until gy.n) {
                val wy = gy.count[j].toLong()
                for (i in 0 until nx) {
                    val weight = wy * gx.count[i]
                    val base = (j * nx + i) * k
                    var best = 0
                    var bestP = -1f
                    for (q in 0 until k) {
                        val p = PanopticDecoder.sigmoid(logits[base + q])
                        if (p > 0.5f) tally.origArea[q] += weight
                        val v = p * scores[q]
                        if (q == 0 || v > bestP) {
                            best = q
                            bestP = v
                        }
                    }
                    tally.won(j, i, best, weight)
                }
            }
        }
        return tally.result()
    }

    /** Expand cell winners `[gy.n * gx.n]` to output pixels `[gy.keep * gx.keep]` into [out]. */
    fun paint(cellWinner: IntArray, gy: GridAxis, gx: GridAxis, out: IntArray) {
        val ww = gx.keep
        val nx = gx.n
        for (y in 0 until gy.keep) {
            val rb = gy.index[y] * nx
            val ob = y * ww
            for (x in 0 until ww) out[ob + x] = cellWinner[rb + gx.index[x]]
        }
    }
}
