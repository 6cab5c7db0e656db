package com.maskconver.decoder

/**
 * Result of [PanopticDecoder.decode] (pure data, the Python `PanopticDecoding`).
 *
 * Masks `[height * width]` row-major: [categoryMask] (0 = void), [instanceMask] (proposal rank + 1 for things,
 * 0 for stuff and void). Segments (distinct (category, instance) pairs, category != 0, ordered by best
 * proposal rank; stuff proposals of one category merge), N of them: [segmentCategory], [segmentInstance],
 * [segmentScore] (best proposal score), [segmentArea] (pixels), [segmentBbox] `[N * 4]` as
 * (x0, y0, x1, y1), x1/y1 exclusive. Valid proposals (score > object_mask_threshold), best first, K of them:
 * [proposalClass], [proposalScore], [proposalY], [proposalX] (feature grid), [proposalArea] (pixels won),
 * [proposalSegment] (segment id 1..N, 0 = dropped), [maskLogits] `[h * w * K]` (low resolution), and
 * [winner] `[height * width]`: the proposal rank that won each pixel in the argmax (0 where K = 0).
 */
class PanopticResult(
    val height: Int,
    val width: Int,
    val categoryMask: IntArray,
    val instanceMask: IntArray,
    val segmentCategory: IntArray,
    val segmentInstance: IntArray,
    val segmentScore: FloatArray,
    val segmentArea: LongArray,
    val segmentBbox: IntArray,
    val proposalClass: IntArray,
    val proposalScore: FloatArray,
    val proposalY: IntArray,
    val proposalX: IntArray,
    val proposalArea: LongArray,
    val proposalSegment: IntArray,
    val maskLogits: FloatArray,
    val winner: IntArray
) {
    val numSegments: Int get() = segmentCategory.size
    val numProposals: Int get() = proposalClass.size
}

/**
 * MaskConver post-processing, a port of the Python runtime's `decode_panoptic` (runtime/decode.py, peaks.py,
 * merge.py, mask_resize.py) with the same float32 arithmetic:
 *
 * 1. Peaks: a location is a peak of class c if its heatmap value is >= every in-image 3x3 neighbour and no
 *    earlier neighbour in raster order (up-left, up, up-right, left) holds the same value while being a window
 *    maximum itself. Top-K over the flat index `(y*w + x)*C + c`: value descending, ties to the lower index.
 *    Only proposals with `sigmoid(logit) > object_mask_threshold` are kept.
 * 2. Mask embeddings: center embedding * class-embedding row -> Dense -> LayerNorm (eps 1e-6) -> ReLU -> Dense;
 *    mask logits `[h, w, K]` = embeddings . mask features (int8 features: `scale * (q.E - zp * sum E)`).
 * 3. Merge: bilinear half-pixel resize, `p = sigmoid`, per pixel winner `argmax p * score` (first on ties),
 *    `mask_area` (pixels won), `original_area = count(p > 0.5)`; keep if `mask_area > small_area`,
 *    `original_area > 0` and `mask_area > overlap * original_area`. Instance id = rank + 1 for things.
 *
 * The merge is computed per resize cell (all pixels of a cell interpolate the same four low-resolution logits):
 * per proposal, bounds of `p * score` over the cell (corner min/max widened by a margin far above float32
 * rounding) decide most cells outright; the others are evaluated pixel by pixel with the dense float32
 * operations, only for the proposals that can still win. The result equals the dense computation.
 *
 * `maskResolution = "grid"` (or `"grid2x"`, `"grid4x"`) replaces step 3 by the real-time merge on the feature
 * grid ([GridMerge], the Python `mask_resolution`): no resize, every output pixel takes its grid cell's labels.
 *
 * One decoder per thread: scratch buffers are reused across calls (the app decodes every frame).
 */
class PanopticDecoder(private val head: MaskHead, thingTable: BooleanArray, private val settings: DecodeSettings) {
    private val isThing = thingTable.copyOf()

    init {
        if (thingTable.size != head.numClasses) {
            throw IllegalArgumentException("thing table has ${thingTable.size} entries for ${head.numClasses} classes")
        }
        if (settings.numProposals < 1) throw IllegalArgumentException("numProposals must be >= 1")
    }

    /**
     * Whether results carry [PanopticResult.maskLogits]. With `false` (what a live app wants) the `"grid"` merge
     * computes only the logits it needs, skipping, per cell, every proposal whose score cannot beat the cell's
     * best `p * score` so far ([gridMergePruned]); the label maps, segments and areas are the same, and
     * `maskLogits` is empty. The other merges ignore it.
     */
    var keepMaskLogits: Boolean = true

    // scratch, grown on demand
    private var keys = FloatArray(0)
    private var heapV = FloatArray(0)
    private var heapI = IntArray(0)
    private var winner = IntArray(0)
    private var row = FloatArray(0)
    private var skippedFrom = IntArray(0)
    private var skippedAt = BooleanArray(0)

    constructor(model: ModelFile) : this(model.maskHead, model.info.thingTable(), model.info.decodeSettings())

    /**
     * Decode one image's outputs.
     *
     * Reference mode ([validH] < 0): logits resized to `outputH x outputW` (the Python default is the 640x640
     * canvas). Original-resolution mode: the model input (`inputH x inputW`, default `stride * (h, w)`) held the
     * original `outputH x outputW` image resized to `validH x validW` at its top-left; logits are resized to
     * `ceil(input * output / valid)` per axis and cropped to the output size.
     *
     * [maskResolution]: `"full"` (default, the reference merge at output resolution), `"grid"` (the merge on the
     * feature grid, nearest-cell labels: a fraction of the cost), `"grid2x"` / `"grid4x"` (on the grid bilinearly
     * upsampled 2x / 4x first). With a grid, [PanopticResult.maskLogits] holds the (upsampled) cells the output
     * covers, `[ny * nx * K]`.
     */
    fun decode(
        heat: FeatureMap,
        center: FeatureMap,
        feats: FeatureMap,
        outputH: Int = settings.canvasHeight,
        outputW: Int = settings.canvasWidth,
        validH: Int = -1,
        validW: Int = -1,
        inputH: Int = -1,
        inputW: Int = -1,
        maskResolution: String = "full"
    ): PanopticResult = decodeWith(heat, center, feats, outputH, outputW, validH, validW, inputH, inputW, null, maskResolution)

    /**
     * [decode], optionally on given mask logits instead of its own (tests isolate the merge): `[h * w * K]`, or
     * with a grid [maskResolution] the used (upsampled) cells `[ny * nx * K]` (the Python `mask_logits`).
     */
    internal fun decodeWith(
        heat: FeatureMap,
        center: FeatureMap,
        feats: FeatureMap,
        outputH: Int,
        outputW: Int,
        validH: Int,
        validW: Int,
        inputH: Int,
        inputW: Int,
        givenLogits: FloatArray?,
        maskResolution: String = "full"
    ): PanopticResult {
        val factor = GridMerge.factor(maskResolution)
        val h = heat.h
        val w = heat.w
        if (center.h != h || center.w != w || feats.h != h || feats.w != w || center.c != feats.c) {
            throw IllegalArgumentException(
                "output shapes disagree: heatmap [${heat.h}, ${heat.w}, ${heat.c}], center_embeddings " +
                    "[${center.h}, ${center.w}, ${center.c}], mask_features [${feats.h}, ${feats.w}, ${feats.c}]"
            )
        }
        if (heat.c != head.numClasses || center.c != head.dim) {
            throw IllegalArgumentException(
                "model outputs have C=${heat.c}, D=${center.c} but the mask head has C=${head.numClasses}, D=${head.dim}"
            )
        }
        if (factor > 0) return decodeGrid(heat, center, feats, factor, gridAxes(h * factor, w * factor, outputH, outputW, validH, validW, inputH, inputW, h, w), givenLogits)
        val plans = outputPlans(h, w, outputH, outputW, validH, validW, inputH, inputW)
        val py = plans.y
        val px = plans.x
        val canvasArea = plans.canvasArea
        val smallArea = settings.smallAreaThreshold * canvasArea / (settings.canvasHeight.toDouble() * settings.canvasWidth)

        val props = findProposals(heat)
        val k = props.size
        val logits = if (givenLogits != null) {
            if (givenLogits.size != h * w * k) throw IllegalArgumentException("given logits are not [h * w * $k]")
            givenLogits
        } else maskLogits(feats, maskEmbeddings(center, props), k)
        return merge(logits, w, props, py, px, smallArea)
    }

    /** Resize plans along y and x and the area of the resized canvas in output pixels. */
    class OutputPlans(val y: AxisPlan, val x: AxisPlan, val canvasArea: Long)

    /** The Python `output_plans`: how `h x w` logits map onto the `outputH x outputW` masks (see [decode]). */
    fun outputPlans(h: Int, w: Int, outputH: Int, outputW: Int, validH: Int, validW: Int, inputH: Int, inputW: Int): OutputPlans {
        val c = outputCanvas(h, w, outputH, outputW, validH, validW, inputH, inputW)
        return OutputPlans(AxisPlan(h, c[0], outputH), AxisPlan(w, c[1], outputW), c[0].toLong() * c[1])
    }

    /**
     * The Python `output_canvas`: the model input canvas in output pixels `[ch, cw]`, the output size without a
     * letterbox ([validH] < 0), else `ceil(input * output / valid)` per axis; the output is its top-left crop.
     */
    fun outputCanvas(h: Int, w: Int, outputH: Int, outputW: Int, validH: Int, validW: Int, inputH: Int, inputW: Int): IntArray {
        val inH = if (inputH > 0) inputH else settings.stride * h
        val inW = if (inputW > 0) inputW else settings.stride * w
        if (validH < 0) return intArrayOf(outputH, outputW)
        if (validH < 1 || validH > inH || validW < 1 || validW > inW) {
            throw IllegalArgumentException("valid size ${validH}x$validW must lie within the model input ${inH}x$inW")
        }
        val ch = ((inH.toLong() * outputH + validH - 1) / validH).toInt()  // ceil(input * output / valid)
        val cw = ((inW.toLong() * outputW + validW - 1) / validW).toInt()
        return intArrayOf(ch, cw)
    }

    /** Nearest-cell maps along y and x for a grid merge and the area of the canvas in output pixels. */
    class GridAxes(val y: GridAxis, val x: GridAxis, val canvasArea: Long)

    /**
     * The Python `grid_axes`: how the output pixels fall into the cells of a `gridH x gridW` grid (the feature
     * grid `h x w` times the grid factor) for a grid `maskResolution` (see [decode]).
     */
    fun gridAxes(gridH: Int, gridW: Int, outputH: Int, outputW: Int, validH: Int, validW: Int, inputH: Int, inputW: Int, h: Int, w: Int): GridAxes {
        val c = outputCanvas(h, w, outputH, outputW, validH, validW, inputH, inputW)
        return GridAxes(GridAxis(gridH, c[0], outputH), GridAxis(gridW, c[1], outputW), c[0].toLong() * c[1])
    }

    /** Steps 1, 2 and the grid merge ([GridMerge]); `factor` 1, 2 or 4. */
    private fun decodeGrid(heat: FeatureMap, center: FeatureMap, feats: FeatureMap, factor: Int, axes: GridAxes, givenLogits: FloatArray?): PanopticResult {
        val gy = axes.y
        val gx = axes.x
        val smallArea = settings.smallAreaThreshold * axes.canvasArea / (settings.canvasHeight.toDouble() * settings.canvasWidth)
        val props = findProposals(heat)
        val k = props.size
        if (factor == 1 && givenLogits == null && !keepMaskLogits) {
            val m = gridMergePruned(feats, center, props, k, props.score, gy, gx, smallArea)
            val npix = gy.keep * gx.keep
            if (winner.size < npix) winner = IntArray(npix)
            if (k == 0) java.util.Arrays.fill(winner, 0, npix, 0) else GridMerge.paint(m.cellWinner, gy, gx, winner)
            return assemble(props, FloatArray(0), gy.keep, gx.keep, m.maskArea, m.originalArea, m.bx0, m.by0, m.bx1, m.by1, smallArea)
        }
        val logits = when {
            givenLogits != null -> {
                if (givenLogits.size != gy.n * gx.n * k) throw IllegalArgumentException("given logits are not [${gy.n} * ${gx.n} * $k]")
                givenLogits
            }
            factor == 1 -> maskLogits(feats, maskEmbeddings(center, props), k, gy.cells, gx.cells)  // only the used cells
            else -> GridMerge.upsampledLogits(maskLogits(feats, maskEmbeddings(center, props), k), heat.h, heat.w, k, factor, gy, gx)
        }
        val m = GridMerge.merge(logits, k, props.score, gy, gx)
        val npix = gy.keep * gx.keep
        if (winner.size < npix) winner = IntArray(npix)
        if (k == 0) java.util.Arrays.fill(winner, 0, npix, 0) else GridMerge.paint(m.cellWinner, gy, gx, winner)
        return assemble(props, logits, gy.keep, gx.keep, m.maskArea, m.originalArea, m.bx0, m.by0, m.bx1, m.by1, smallArea)
    }

    // -----------------------------------------------------------------------------------------------------
    // proposals

    /** Valid proposals, best first: flat indices and dequantised logits / sigmoid scores. */
    class Proposals(val index: IntArray, val logit: FloatArray, val score: FloatArray, val c: Int, val w: Int) {
        val size: Int get() = index.size
        fun cls(q: Int): Int = index[q] % c
        fun y(q: Int): Int = index[q] / c / w
        fun x(q: Int): Int = (index[q] / c) % w
    }

    private fun windowMax(key: FloatArray, idx: Int, y: Int, x: Int, h: Int, w: Int, c: Int): Boolean {
        val v = key[idx]
        for (dy in -1..1) {
            val yy = y + dy
            if (yy < 0 || yy >= h) continue
            for (dx in -1..1) {
                if (dy == 0 && dx == 0) continue
                val xx = x + dx
                if (xx < 0 || xx >= w) continue
                if (!(key[idx + (dy * w + dx) * c] <= v)) return false
            }
        }
        return true
    }

    private fun isPeak(key: FloatArray, idx: Int, h: Int, w: Int, c: Int): Boolean {
        val pix = idx / c
        val y = pix / w
        val x = pix - y * w
        if (!windowMax(key, idx, y, x, h, w, c)) return false
        val v = key[idx]
        // earlier neighbours in raster order: (-1,-1), (-1,0), (-1,1), (0,-1)
        for (e in 0 until 4) {
            val dy = if (e < 3) -1 else 0
            val dx = if (e < 3) e - 1 else -1
            val yy = y + dy
            val xx = x + dx
            if (yy < 0 || xx < 0 || xx >= w) continue
            val nb = idx + (dy * w + dx) * c
            if (key[nb] == v && windowMax(key, nb, yy, xx, h, w, c)) return false
        }
        return true
    }

    /** Heap order: true if (va, ia) ranks below (vb, ib) (lower value, or equal value and higher index). */
    private fun worse(va: Float, ia: Int, vb: Float, ib: Int): Boolean = va < vb || (va == vb && ia > ib)

    private fun siftDown(n: Int, start: Int) {
        var i = start
        while (true) {
            val l = 2 * i + 1
            if (l >= n) return
            var m = l
            if (l + 1 < n && worse(heapV[l + 1], heapI[l + 1], heapV[l], heapI[l])) m = l + 1
            if (!worse(heapV[m], heapI[m], heapV[i], heapI[i])) return
            val tv = heapV[i]; heapV[i] = heapV[m]; heapV[m] = tv
            val ti = heapI[i]; heapI[i] = heapI[m]; heapI[m] = ti
            i = m
        }
    }

    /** Top-K heatmap peaks with `sigmoid(logit) > object_mask_threshold` (runtime/peaks.py `find_proposals`). */
    fun findProposals(heat: FeatureMap): Proposals {
        val h = heat.h
        val w = heat.w
        val c = heat.c
        val n = h * w * c
        val k = settings.numProposals
        // comparison keys: the logits, or the integer codes (dequantisation is strictly increasing)
        val key: FloatArray
        val cut: Float
        val t = logitThreshold(settings.objectMaskThreshold)
        if (heat.floats != null) {
            key = heat.floats
            cut = if (t == Double.NEGATIVE_INFINITY) Float.NEGATIVE_INFINITY else t.toFloat()
        } else {
            if (keys.size < n) keys = FloatArray(n)
            key = keys
            for (i in 0 until n) key[i] = heat.code(i).toFloat()
            cut = when {
                t == Double.NEGATIVE_INFINITY -> Float.NEGATIVE_INFINITY
                t == Double.POSITIVE_INFINITY -> Float.POSITIVE_INFINITY
                else -> Math.ceil(heat.zeroPoint + t / heat.scale - 1e-6).toFloat()
            }
        }
        if (heapV.size < k) {
            heapV = FloatArray(k)
            heapI = IntArray(k)
        }
        var size = 0
        for (idx in 0 until n) {
            val v = key[idx]
            if (!(v >= cut)) continue
            // scanning in ascending index order: an equal value ranks below everything already held
            if (size == k && !(v > heapV[0])) continue
            if (!isPeak(key, idx, h, w, c)) continue
            if (size < k) {
                // push: append and sift up
                var i = size++
                heapV[i] = v
                heapI[i] = idx
                while (i > 0) {
                    val p = (i - 1) / 2
                    if (!worse(heapV[i], heapI[i], heapV[p], heapI[p])) break
                    val tv = heapV[i]; heapV[i] = heapV[p]; heapV[p] = tv
                    val ti = heapI[i]; heapI[i] = heapI[p]; heapI[p] = ti
                    i = p
                }
            } else {
                heapV[0] = v
                heapI[0] = idx
                siftDown(size, 0)
            }
        }
        // best first: value descending, ties to the lower flat index (insertion sort of <= K entries)
        val order = IntArray(size) { it }
        for (i in 1 until size) {
            val cur = order[i]
            var j = i - 1
            while (j >= 0 && worse(heapV[order[j]], heapI[order[j]], heapV[cur], heapI[cur])) {
                order[j + 1] = order[j]
                j--
            }
            order[j + 1] = cur
        }
        val thr = settings.objectMaskThreshold.toFloat()
        val idxs = IntArray(size)
        val logit = FloatArray(size)
        val score = FloatArray(size)
        var m = 0
        for (r in 0 until size) {
            val idx = heapI[order[r]]
            val l = heat.value(idx)
            val s = sigmoid(l)
            if (s > thr) {
                idxs[m] = idx
                logit[m] = l
                score[m] = s
                m++
            }
        }
        return Proposals(idxs.copyOf(m), logit.copyOf(m), score.copyOf(m), c, w)
    }

    // -----------------------------------------------------------------------------------------------------
    // mask head

    /** Mask embeddings `[K * D]`: MLP(center row * class-embedding row), MLP = Dense, LayerNorm, ReLU, Dense. */
    fun maskEmbeddings(center: FeatureMap, props: Proposals): FloatArray {
        val out = FloatArray(props.size * head.dim)
        for (q in 0 until props.size) embedRow(center, props, q, out)
        return out
    }

    private var mlpX = FloatArray(0)
    private var mlpA = FloatArray(0)

    /** Row [q] of [maskEmbeddings] into `out[q * D ..]` (which must hold zeros there). */
    private fun embedRow(center: FeatureMap, props: Proposals, q: Int, out: FloatArray) {
        val d = head.dim
        val hid = head.hidden
        if (mlpX.size < d) mlpX = FloatArray(d)
        if (mlpA.size < hid) mlpA = FloatArray(hid)
        val x = mlpX
        val a = mlpA
        run {
            val cls = maxOf(props.cls(q), 0)
            val base = (props.index[q] / props.c) * d
            for (i in 0 until d) x[i] = center.value(base + i) * head.classEmbeddings[cls * d + i]
            java.util.Arrays.fill(a, 0f)
            for (i in 0 until d) {
                val xi = x[i]
                val kb = i * hid
                for (j in 0 until hid) a[j] += xi * head.dense0Kernel[kb + j]
            }
            var sum = 0.0
            for (j in 0 until hid) {
                a[j] += head.dense0Bias[j]
                sum += a[j]
            }
            val mean = (sum / hid).toFloat()
            var sq = 0.0
            for (j in 0 until hid) {
                val t = a[j] - mean
                sq += (t * t).toDouble()
            }
            val varF = (sq / hid).toFloat()
            val denom = Math.sqrt((varF + LAYER_NORM_EPSILON).toDouble()).toFloat()
            for (j in 0 until hid) {
                val t = (a[j] - mean) / denom * head.normGamma[j] + head.normBeta[j]
                a[j] = if (t > 0f) t else 0f
            }
            val ob = q * d
            for (j in 0 until hid) {
                val aj = a[j]
                if (aj == 0f) continue
                val kb = j * d
                for (i in 0 until d) out[ob + i] += aj * head.dense1Kernel[kb + i]
            }
            for (i in 0 until d) out[ob + i] += head.dense1Bias[i]
        }
    }

    /**
     * Mask logits `[h * w * K]` = mask features `[h*w, D]` . embeddings `[K, D]`^T; with [rows] and [cols] only at
     * those grid rows x columns, `[rows.size * cols.size * K]`.
     */
    fun maskLogits(feats: FeatureMap, emb: FloatArray, k: Int, rows: IntArray? = null, cols: IntArray? = null): FloatArray {
        val d = feats.c
        val ys = rows ?: IntArray(feats.h) { it }
        val xs = cols ?: IntArray(feats.w) { it }
        val hw = ys.size * xs.size
        val out = FloatArray(hw * k)
        if (k == 0) return out
        if (row.size < d) row = FloatArray(d)
        val r = row
        val f = feats.floats
        val colSum = columnSums(feats, emb, k)
        for (p in 0 until hw) {
            val fb = (ys[p / xs.size] * feats.w + xs[p % xs.size]) * d
            if (f != null) System.arraycopy(f, fb, r, 0, d) else for (i in 0 until d) r[i] = feats.code(fb + i).toFloat()
            val ob = p * k
            for (q in 0 until k) out[ob + q] = logitOf(r, emb, q, d, colSum, feats)
        }
        return out
    }

    /** Column sums of the embeddings `[K]` for quantised features (the zero-point term), else null. */
    private fun columnSums(feats: FeatureMap, emb: FloatArray, k: Int): FloatArray? {
        if (feats.floats != null) return null
        return FloatArray(k) { q -> rowSum(emb, q, feats.c) }
    }

    private fun rowSum(emb: FloatArray, q: Int, d: Int): Float {
        var s = 0.0
        for (i in 0 until d) s += emb[q * d + i]
        return s.toFloat()
    }

    /**
     * Mask-head rows the last pruned grid decode ran (`keepMaskLogits = false`, factor 1): the MLP runs for a
     * proposal only when some cell computes its logit, so a trained model's low-score tail never runs it.
     */
    var lastMaskHeadRows = 0
        private set

    /** The mask logit of proposal [q] at a cell whose features are [r] `[D]` (as floats): [maskLogits]' arithmetic. */
    private fun logitOf(r: FloatArray, emb: FloatArray, q: Int, d: Int, colSum: FloatArray?, feats: FeatureMap): Float {
        val eb = q * d
        var s0 = 0f
        var s1 = 0f
        var s2 = 0f
        var s3 = 0f
        var i = 0
        while (i + 3 < d) {
            s0 += r[i] * emb[eb + i]
            s1 += r[i + 1] * emb[eb + i + 1]
            s2 += r[i + 2] * emb[eb + i + 2]
            s3 += r[i + 3] * emb[eb + i + 3]
            i += 4
        }
        while (i < d) {
            s0 += r[i] * emb[eb + i]
            i++
        }
        val dot = (s0 + s1) + (s2 + s3)
        return if (colSum == null) dot else (dot - feats.zeroPoint * colSum[q]) * feats.scale
    }

    /**
     * [GridMerge.merge] of the used cells straight from the mask features, computing a logit only where it can
     * matter (the Python `merge_grid_pruned`, pruned per cell): going down the proposals of a cell, one whose
     * score is at most the cell's best `p * score` so far is skipped, since `p <= 1` (also in float32) so its
     * product cannot beat it, and an earlier proposal wins a tie. `count(p > 0.5)` is counted on the logits
     * computed, and completed on the skipped cells only for the proposals whose won area passes [smallArea]
     * (the others are dropped whatever it is). Every logit computed is [maskLogits]' own float, so the result
     * is the full merge's. A proposal's embedding ([embedRow], the same floats as [maskEmbeddings]) is computed
     * when its first logit is: one that no cell needs never runs the MLP ([lastMaskHeadRows]).
     */
    private fun gridMergePruned(
        feats: FeatureMap, center: FeatureMap, props: Proposals, k: Int, scores: FloatArray, gy: GridAxis, gx: GridAxis,
        smallArea: Double
    ): GridMergeResult {
        val ny = gy.n
        val nx = gx.n
        val d = feats.c
        val tally = GridTally(k, gy, gx)
        lastMaskHeadRows = 0
        if (k == 0) return tally.result()
        val maskArea = tally.maskArea
        val origArea = tally.origArea
        if (row.size < d) row = FloatArray(d)
        val r = row
        val f = feats.floats
        val emb = FloatArray(k * d)
        val colSum = if (f == null) FloatArray(k) else null
        val embedded = BooleanArray(k)
        var rows = 0
        fun ensure(q: Int) {
            if (embedded[q]) return
            embedRow(center, props, q, emb)
            if (colSum != null) colSum[q] = rowSum(emb, q, d)
            embedded[q] = true
            rows++
        }
        // per cell, the first proposal skipped (k: none); proposals from it on were skipped or computed
        if (skippedFrom.size < ny * nx) skippedFrom = IntArray(ny * nx)
        if (skippedAt.size < ny * nx * k) skippedAt = BooleanArray(ny * nx * k)
        val from = skippedFrom
        val skipped = skippedAt
        for (j in 0 until ny) {
            val wy = gy.count[j].toLong()
            for (i in 0 until nx) {
                val cell = j * nx + i
                val weight = wy * gx.count[i]
                val fb = (gy.cells[j] * feats.w + gx.cells[i]) * d
                if (f != null) System.arraycopy(f, fb, r, 0, d) else for (t in 0 until d) r[t] = feats.code(fb + t).toFloat()
                var best = 0
                var bestP = -1f
                var first = k
                val sb = cell * k
                for (q in 0 until k) {
                    if (q > 0 && scores[q] <= bestP) {  // p * score <= score <= best: cannot win
                        if (first == k) first = q
                        skipped[sb + q] = true
                        continue
                    }
                    skipped[sb + q] = false
                    ensure(q)
                    val p = sigmoid(logitOf(r, emb, q, d, colSum, feats))
                    if (p > 0.5f) origArea[q] += weight
                    val v = p * scores[q]
                    if (q == 0 || v > bestP) {
                        best = q
                        bestP = v
                    }
                }
                from[cell] = first
                tally.won(j, i, best, weight)
            }
        }
        // complete count(p > 0.5) on the skipped cells of the proposals the keep test will look at
        var lo = k
        for (q in 0 until k) if (maskArea[q].toDouble() > smallArea) { lo = q; break }
        if (lo < k) {
            for (j in 0 until ny) {
                val wy = gy.count[j].toLong()
                for (i in 0 until nx) {
                    val cell = j * nx + i
                    val sb = cell * k
                    var loaded = false
                    for (q in maxOf(from[cell], lo) until k) {
                        if (!skipped[sb + q] || !(maskArea[q].toDouble() > smallArea)) continue
                        if (!loaded) {
                            val fb = (gy.cells[j] * feats.w + gx.cells[i]) * d
                            if (f != null) System.arraycopy(f, fb, r, 0, d) else for (t in 0 until d) r[t] = feats.code(fb + t).toFloat()
                            loaded = true
                        }
                        ensure(q)
                        if (sigmoid(logitOf(r, emb, q, d, colSum, feats)) > 0.5f) origArea[q] += wy * gx.count[i]
                    }
                }
            }
        }
        lastMaskHeadRows = rows
        return tally.result()
    }

    // -----------------------------------------------------------------------------------------------------
    // merge

    // merge state (scratch, valid during one merge call)
    private var mk = 0
    private var mw = 0
    private var mLogits = FloatArray(0)
    private var mScores = FloatArray(0)
    private var mPy: AxisPlan? = null
    private var mPx: AxisPlan? = null
    private var ca = FloatArray(0)
    private var cb = FloatArray(0)
    private var cc = FloatArray(0)
    private var cd = FloatArray(0)
    private var mg = FloatArray(0)
    private var sLo = FloatArray(0)
    private var sHi = FloatArray(0)
    private var upp = FloatArray(0)
    private var cand = Array(MAX_DEPTH) { IntArray(0) }
    private var maskArea = LongArray(0)
    private var bx0 = IntArray(0)
    private var by0 = IntArray(0)
    private var bx1 = IntArray(0)
    private var by1 = IntArray(0)

    /** Load the four source logits of cell (y-run [ys], x-run [xs]) of every proposal and their margins. */
    private fun loadCell(ys: Int, xs: Int) {
        val py = mPy!!
        val px = mPx!!
        val k = mk
        val r0 = py.i0[ys] * mw
        val r1 = py.i1[ys] * mw
        val a0 = (r0 + px.i0[xs]) * k
        val b0 = (r0 + px.i1[xs]) * k
        val c0 = (r1 + px.i0[xs]) * k
        val d0 = (r1 + px.i1[xs]) * k
        val l = mLogits
        for (q in 0 until k) {
            val a = l[a0 + q]
            val b = l[b0 + q]
            val c = l[c0 + q]
            val d = l[d0 + q]
            ca[q] = a; cb[q] = b; cc[q] = c; cd[q] = d
            val lo = minOf(minOf(a, b), minOf(c, d))
            val hi = maxOf(maxOf(a, b), maxOf(c, d))
            mg[q] = maxOf(hi, -lo) * REL_LOGIT
        }
    }

    /** Resized logit of proposal q at a pixel of the current cell (the dense path's float32 operations). */
    private fun interp(q: Int, lx: Float, ly: Float): Float {
        val top = ca[q] + (cb[q] - ca[q]) * lx
        val bot = cc[q] + (cd[q] - cc[q]) * lx
        return top + (bot - top) * ly
    }

    private fun fill(y0: Int, y1: Int, x0: Int, x1: Int, q: Int) {
        val ww = mPx!!.n
        for (y in y0 until y1) java.util.Arrays.fill(winner, y * ww + x0, y * ww + x1, q)
        maskArea[q] += ((y1 - y0) * (x1 - x0)).toLong()
        if (x0 < bx0[q]) bx0[q] = x0
        if (y0 < by0[q]) by0[q] = y0
        if (x1 > bx1[q]) bx1[q] = x1
        if (y1 > by1[q]) by1[q] = y1
    }

    /**
     * Winners of the pixel block [y0, y1) x [x0, x1) (inside the current cell) among the proposals
     * `cand[depth][0 until nc]` (ascending; every other proposal is known to lose there). The bilinear
     * function takes its extremes over a block at the block's corner pixels, so per candidate the corner values
     * widened by the cell margin bound its logits, hence `p * score`; candidates whose upper bound is below the
     * best lower bound drop out. One left: the block is decided. Small blocks: pixel by pixel.
     */
    private fun resolve(y0: Int, y1: Int, x0: Int, x1: Int, nc: Int, depth: Int) {
        val py = mPy!!
        val px = mPx!!
        val c = cand[depth]
        if ((y1 - y0) * (x1 - x0) <= EXACT_PIXELS || depth + 1 >= MAX_DEPTH) {
            val ww = px.n
            for (y in y0 until y1) {
                val ly = py.lerp[y]
                for (x in x0 until x1) {
                    val lx = px.lerp[x]
                    var best = c[0]
                    var bestP = sigmoid(interp(best, lx, ly)) * mScores[best]
                    for (j in 1 until nc) {
                        val q = c[j]
                        val p = sigmoid(interp(q, lx, ly)) * mScores[q]
                        if (p > bestP) {
                            best = q
                            bestP = p
                        }
                    }
                    winner[y * ww + x] = best
                    maskArea[best]++
                    if (x < bx0[best]) bx0[best] = x
                    if (y < by0[best]) by0[best] = y
                    if (x + 1 > bx1[best]) bx1[best] = x + 1
                    if (y + 1 > by1[best]) by1[best] = y + 1
                }
            }
            return
        }
        val my = y0 + (y1 - y0) / 2
        val mx = x0 + (x1 - x0) / 2
        val next = cand[depth + 1]
        for (quad in 0 until 4) {
            val qy0 = if (quad < 2) y0 else my
            val qy1 = if (quad < 2) my else y1
            val qx0 = if (quad % 2 == 0) x0 else mx
            val qx1 = if (quad % 2 == 0) mx else x1
            if (qy1 <= qy0 || qx1 <= qx0) continue
            val lxa = px.lerp[qx0]
            val lxb = px.lerp[qx1 - 1]
            val lya = py.lerp[qy0]
            val lyb = py.lerp[qy1 - 1]
            var maxLow = Float.NEGATIVE_INFINITY
            for (j in 0 until nc) {
                val q = c[j]
                val v00 = interp(q, lxa, lya)
                val v01 = interp(q, lxb, lya)
                val v10 = interp(q, lxa, lyb)
                val v11 = interp(q, lxb, lyb)
                val lo = minOf(minOf(v00, v01), minOf(v10, v11)) - mg[q]
                val hi = maxOf(maxOf(v00, v01), maxOf(v10, v11)) + mg[q]
                val low = sigmoid(lo) * sLo[q] - ABS_PROD
                upp[q] = sigmoid(hi) * sHi[q] + ABS_PROD
                if (low > maxLow) maxLow = low
            }
            var nn = 0
            for (j in 0 until nc) if (upp[c[j]] >= maxLow) next[nn++] = c[j]
            if (nn == 1) fill(qy0, qy1, qx0, qx1, next[0]) else resolve(qy0, qy1, qx0, qx1, nn, depth + 1)
        }
    }

    /** `count(sigmoid(logit of q) > 0.5)` over a block of the current cell, coarse to fine (sign bounds). */
    private fun positive(q: Int, y0: Int, y1: Int, x0: Int, x1: Int, depth: Int): Long {
        val py = mPy!!
        val px = mPx!!
        val v00 = interp(q, px.lerp[x0], py.lerp[y0])
        val v01 = interp(q, px.lerp[x1 - 1], py.lerp[y0])
        val v10 = interp(q, px.lerp[x0], py.lerp[y1 - 1])
        val v11 = interp(q, px.lerp[x1 - 1], py.lerp[y1 - 1])
        val lo = minOf(minOf(v00, v01), minOf(v10, v11)) - mg[q]
        val hi = maxOf(maxOf(v00, v01), maxOf(v10, v11)) + mg[q]
        if (lo > SIGN_MARGIN) return ((y1 - y0) * (x1 - x0)).toLong()
        if (hi < -SIGN_MARGIN) return 0L
        if ((y1 - y0) * (x1 - x0) <= EXACT_PIXELS || depth + 1 >= MAX_DEPTH) {
            var n = 0L
            for (y in y0 until y1) {
                val ly = py.lerp[y]
                for (x in x0 until x1) if (sigmoid(interp(q, px.lerp[x], ly)) > 0.5f) n++
            }
            return n
        }
        val my = y0 + (y1 - y0) / 2
        val mx = x0 + (x1 - x0) / 2
        var n = 0L
        if (my > y0 && mx > x0) n += positive(q, y0, my, x0, mx, depth + 1)
        if (my > y0) n += positive(q, y0, my, mx, x1, depth + 1)
        if (mx > x0) n += positive(q, my, y1, x0, mx, depth + 1)
        n += positive(q, my, y1, mx, x1, depth + 1)
        return n
    }

    private fun grow(k: Int) {
        if (ca.size < k) {
            ca = FloatArray(k); cb = FloatArray(k); cc = FloatArray(k); cd = FloatArray(k)
            mg = FloatArray(k); sLo = FloatArray(k); sHi = FloatArray(k); upp = FloatArray(k)
            cand = Array(MAX_DEPTH) { IntArray(k) }
        }
    }

    private fun merge(
        logits: FloatArray,
        w: Int,
        props: Proposals,
        py: AxisPlan,
        px: AxisPlan,
        smallArea: Double
    ): PanopticResult {
        val k = props.size
        val hh = py.n
        val ww = px.n
        val npix = hh * ww
        if (winner.size < npix) winner = IntArray(npix)
        val win = winner
        if (k == 0) java.util.Arrays.fill(win, 0, npix, 0)
        grow(k)
        mk = k
        mw = w
        mLogits = logits
        mPy = py
        mPx = px
        val scores = props.score
        mScores = scores
        maskArea = LongArray(k)
        val origArea = LongArray(k)
        bx0 = IntArray(k) { ww }
        by0 = IntArray(k) { hh }
        bx1 = IntArray(k)
        by1 = IntArray(k)
        if (k > 0) {
            for (q in 0 until k) {
                sLo[q] = scores[q] * (1f - REL_PROD)
                sHi[q] = scores[q] * (1f + REL_PROD)
            }
            val need = BooleanArray(k)
            for (pass in 0 until 2) {
                // pass 0: winners; pass 1: original_area = count(p > 0.5), only where the area test passes
                if (pass == 1) {
                    var any = false
                    for (q in 0 until k) {
                        need[q] = maskArea[q].toDouble() > smallArea
                        any = any || need[q]
                    }
                    if (!any) break
                }
                for (ry in py.runStart.indices) {
                    val ys = py.runStart[ry]
                    val ye = ys + py.runLen[ry]
                    for (rx in px.runStart.indices) {
                        val xs = px.runStart[rx]
                        val xe = xs + px.runLen[rx]
                        loadCell(ys, xs)
                        if (pass == 1) {
                            for (q in 0 until k) if (need[q]) origArea[q] += positive(q, ys, ye, xs, xe, 0)
                            continue
                        }
                        var maxLow = Float.NEGATIVE_INFINITY
                        for (q in 0 until k) {
                            val lo = minOf(minOf(ca[q], cb[q]), minOf(cc[q], cd[q])) - mg[q]
                            val hi = maxOf(maxOf(ca[q], cb[q]), maxOf(cc[q], cd[q])) + mg[q]
                            val low = sigmoid(lo) * sLo[q] - ABS_PROD
                            upp[q] = sigmoid(hi) * sHi[q] + ABS_PROD
                            if (low > maxLow) maxLow = low
                        }
                        val c0 = cand[0]
                        var nc = 0
                        for (q in 0 until k) if (upp[q] >= maxLow) c0[nc++] = q
                        if (nc == 1) fill(ys, ye, xs, xe, c0[0]) else resolve(ys, ye, xs, xe, nc, 0)
                    }
                }
            }
        }
        return assemble(props, logits, hh, ww, maskArea, origArea, bx0, by0, bx1, by1, smallArea)
    }

    /**
     * Keep tests, segments and masks from a merge's per-proposal pixel counts and boxes and the winner map in
     * [winner] (`[hh * ww]`).
     */
    private fun assemble(
        props: Proposals,
        logits: FloatArray,
        hh: Int,
        ww: Int,
        maskArea: LongArray,
        origArea: LongArray,
        bx0: IntArray,
        by0: IntArray,
        bx1: IntArray,
        by1: IntArray,
        smallArea: Double
    ): PanopticResult {
        val k = props.size
        val npix = hh * ww
        val win = winner
        val scores = props.score
        // keep tests and segments
        val kept = BooleanArray(k)
        val catLut = IntArray(k)
        val instLut = IntArray(k)
        val segOf = IntArray(k)
        val segKeys = ArrayList<Long>()
        val segIndex = HashMap<Long, Int>()
        for (q in 0 until k) {
            val m = maskArea[q]
            kept[q] = m.toDouble() > smallArea && origArea[q] > 0 && m.toDouble() > settings.overlapThreshold * origArea[q].toDouble()
            if (!kept[q]) continue
            val cls = props.cls(q)
            catLut[q] = cls
            instLut[q] = if (isThing[cls]) q + 1 else 0
            if (cls == 0) continue  // a kept void-class proposal paints void pixels and is no segment
            val key = cls.toLong() * 1_000_000L + instLut[q]
            var s = segIndex[key]
            if (s == null) {
                segKeys.add(key)
                s = segKeys.size
                segIndex[key] = s
            }
            segOf[q] = s
        }
        val ns = segKeys.size
        val segCat = IntArray(ns)
        val segInst = IntArray(ns)
        val segScore = FloatArray(ns)
        val segArea = LongArray(ns)
        val segBox = IntArray(ns * 4)
        val seen = BooleanArray(ns)
        for (q in 0 until k) {
            val s = segOf[q] - 1
            if (s < 0) continue
            segCat[s] = catLut[q]
            segInst[s] = instLut[q]
            segArea[s] += maskArea[q]
            if (!seen[s]) {
                seen[s] = true
                segScore[s] = scores[q]
                segBox[4 * s] = bx0[q]; segBox[4 * s + 1] = by0[q]; segBox[4 * s + 2] = bx1[q]; segBox[4 * s + 3] = by1[q]
            } else {
                if (scores[q] > segScore[s]) segScore[s] = scores[q]
                segBox[4 * s] = minOf(segBox[4 * s], bx0[q])
                segBox[4 * s + 1] = minOf(segBox[4 * s + 1], by0[q])
                segBox[4 * s + 2] = maxOf(segBox[4 * s + 2], bx1[q])
                segBox[4 * s + 3] = maxOf(segBox[4 * s + 3], by1[q])
            }
        }
        val category = IntArray(npix)
        val instance = IntArray(npix)
        if (k > 0) {
            for (i in 0 until npix) {
                val q = win[i]
                category[i] = catLut[q]
                instance[i] = instLut[q]
            }
        }
        val propArea = maskArea
        return PanopticResult(
            hh, ww, category, instance, segCat, segInst, segScore, segArea, segBox,
            IntArray(k) { props.cls(it) }, scores, IntArray(k) { props.y(it) }, IntArray(k) { props.x(it) },
            propArea, segOf, logits, win.copyOf(npix)
        )
    }

    companion object {
        const val LAYER_NORM_EPSILON = 1e-6f
        // bound margins, as the Python merge: far above float32 rounding of interpolation, exp and product
        private const val REL_LOGIT = 4e-6f
        private const val REL_PROD = 1e-5f
        private const val ABS_PROD = 1e-37f
        private const val SIGN_MARGIN = 1e-3f
        private const val EXACT_PIXELS = 16  // blocks this small are evaluated pixel by pixel
        private const val MAX_DEPTH = 24

        /** float32 `1 / (1 + exp(-x))`. */
        fun sigmoid(x: Float): Float = 1f / (1f + Math.exp(-x.toDouble()).toFloat())

        /** A value a little below `log(t / (1 - t))`: every logit whose float32 sigmoid exceeds t is above it. */
        fun logitThreshold(t: Double): Double {
            if (t <= 0.0) return Double.NEGATIVE_INFINITY
            if (t >= 1.0) return Double.POSITIVE_INFINITY
            val l = Math.log(t / (1.0 - t))
            return l - 1e-3 * maxOf(1.0, Math.abs(l))
        }
    }
}
