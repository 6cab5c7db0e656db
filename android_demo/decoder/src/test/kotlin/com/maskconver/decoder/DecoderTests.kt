package com.maskconver.decoder

import org.json.JSONArray
import org.json.JSONObject
import java.io.File

/**
 * Plain test runner (no JUnit: it runs with nothing but kotlinc / java): unit checks of the readers, then every
 * golden case folder written by `android_demo/tools/export_golden.py` is decoded and compared with what the
 * Python runtime returned. Usage: `DecoderTestsKt [--out DIR] CASES_DIR...` (a case folder holds case.json;
 * a CASES_DIR may be such a folder or hold them). With `--out`, the Kotlin results are written as
 * `DIR/<case>.npz` for the Python side to compare. Prints `N passed, M failed`; exit status 1 on failure.
 */
object Runner {
    var passed = 0
    var failed = 0

    fun check(name: String, body: () -> Unit) {
        try {
            body()
            passed++
            println("PASS $name")
        } catch (e: Throwable) {
            failed++
            println("FAIL $name: ${e.message ?: e.toString()}")
        }
    }
}

class Failure(msg: String) : AssertionError(msg)

fun require(ok: Boolean, msg: () -> String) {
    if (!ok) throw Failure(msg())
}

fun expectThrows(fragment: String, body: () -> Unit) {
    try {
        body()
    } catch (e: ModelFileException) {
        require(e.message!!.contains(fragment)) { "error '${e.message}' does not mention '$fragment'" }
        return
    }
    throw Failure("no ModelFileException mentioning '$fragment'")
}

// -------------------------------------------------------------------------------------------------------------
// unit checks

fun unitChecks() {
    Runner.check("npy round trip (f4, i4, i8, shapes)") {
        val f = floatArrayOf(1.5f, -2f, 3.25f, 0f, 1e-30f, -7f)
        val a = NpyArray.parse(NpyArray.ofFloats(intArrayOf(2, 3), f))
        require(a.shape.contentEquals(intArrayOf(2, 3)) && a.floats().contentEquals(f)) { "f4 mismatch" }
        val i = intArrayOf(-5, 7, Int.MAX_VALUE)
        require(NpyArray.parse(NpyArray.ofInts(intArrayOf(3), i)).ints().contentEquals(i)) { "i4 mismatch" }
        val l = longArrayOf(-1L, 1L shl 40)
        require(NpyArray.parse(NpyArray.ofLongs(intArrayOf(2), l)).longs().contentEquals(l)) { "i8 mismatch" }
        val s = NpyArray.parse(NpyArray.ofInts(IntArray(0), intArrayOf(42)))
        require(s.shape.isEmpty() && s.ints()[0] == 42) { "scalar mismatch" }
    }
    Runner.check("npy rejects bad input with a clear error") {
        expectThrows("not a .npy") { NpyArray.parse("hello world".toByteArray()) }
        val good = NpyArray.ofFloats(intArrayOf(4), FloatArray(4))
        expectThrows("truncated") { NpyArray.parse(good.copyOf(good.size - 3)) }
    }
    Runner.check("zip after a prefix (as appended to a .tflite), stored and deflated") {
        val bos = java.io.ByteArrayOutputStream()
        val prefix = ByteArray(1000) { (it * 7).toByte() }
        bos.write(prefix)
        val z = java.util.zip.ZipOutputStream(bos)
        z.putNextEntry(java.util.zip.ZipEntry("a.txt"))
        z.write("alpha\n".toByteArray())
        z.closeEntry()
        z.putNextEntry(java.util.zip.ZipEntry("b.bin"))
        val big = ByteArray(5000) { (it % 13).toByte() }
        z.write(big)
        z.closeEntry()
        z.finish()
        val e = ZipBytes.entries(bos.toByteArray())
        require(String(e.getValue("a.txt")) == "alpha\n") { "a.txt" }
        require(e.getValue("b.bin").contentEquals(big)) { "b.bin" }
        expectThrows("no zip") { ZipBytes.entries(prefix) }
    }
    Runner.check("ModelInfo parses maskconver.json and rejects bad versions / fields") {
        val text = """{"format_version": 1, "config_name": "x", "input_size": [256, 320], "num_classes": 3,
            "embedding_size": 4, "small_area_threshold": 100.0, "canvas_size": [640, 640],
            "categories": [{"id": 0, "name": "void", "isthing": false, "color": [0, 0, 0]},
                           {"id": 1, "name": "person", "isthing": true, "color": [220, 20, 60]}]}"""
        val info = ModelInfo.parse(text)
        require(info.inputHeight == 256 && info.inputWidth == 320 && info.numProposals == 50) { "fields" }
        require(info.thingTable().contentEquals(booleanArrayOf(false, true, false))) { "thing table" }
        require(info.labels() == listOf("void", "person", "class_2")) { "labels ${info.labels()}" }
        require(info.colors()[1] == 0xDC143C) { "colour" }
        require(info.smallAreaThreshold == 100.0 && info.objectMaskThreshold == 0.01) { "thresholds" }
        expectThrows("format_version") { ModelInfo.parse(text.replace("\"format_version\": 1", "\"format_version\": 2")) }
        expectThrows("lacks embedding_size") { ModelInfo.parse(text.replace("\"embedding_size\"", "\"emb\"")) }
        expectThrows("not valid JSON") { ModelInfo.parse("{oops") }
    }
    Runner.check("AxisPlan: TF half-pixel plan (4 -> 8 and 5 -> 3, as Python axis_plan)") {
        val p = AxisPlan(4, 8)
        require(p.i0.contentEquals(intArrayOf(0, 0, 0, 1, 1, 2, 2, 3))) { "i0 ${p.i0.contentToString()}" }
        require(p.i1.contentEquals(intArrayOf(0, 1, 1, 2, 2, 3, 3, 3))) { "i1 ${p.i1.contentToString()}" }
        require(p.lerp[1] == 0.25f && p.lerp[2] == 0.75f && p.lerp[0] == 0.75f) { "lerp ${p.lerp.contentToString()}" }
        require(p.runStart.contentEquals(intArrayOf(0, 1, 3, 5, 7))) { "runs ${p.runStart.contentToString()}" }
        val d = AxisPlan(5, 3)
        // values from the Python axis_plan(5, 3): src = 1.5 * (5 / 3) - 0.5 is exactly 2 in float32
        require(d.i0.contentEquals(intArrayOf(0, 2, 3)) && d.i1.contentEquals(intArrayOf(1, 2, 4))) { "downscale" }
        require(d.lerp[0] == 0.3333333f && d.lerp[1] == 0f && d.lerp[2] == 0.6666665f) { "downscale lerp" }
    }
    Runner.check("peaks: raster tie-break on a plateau, top-K order, threshold") {
        // 1 class, 3x4 grid: plateau of two equal maxima (first in raster order wins), a lone peak, noise
        val v = floatArrayOf(
            0f, 5f, 5f, 0f,
            0f, 0f, 0f, 0f,
            -9f, 0f, 0f, 3f
        )
        val head = MaskHead(1, 1, 1, floatArrayOf(1f), floatArrayOf(1f), floatArrayOf(0f), floatArrayOf(1f), floatArrayOf(0f), floatArrayOf(1f), floatArrayOf(0f))
        val dec = PanopticDecoder(head, BooleanArray(1), DecodeSettings(numProposals = 5))
        val p = dec.findProposals(FeatureMap.ofFloats(3, 4, 1, v))
        // peaks: 5 at index 1 (not its plateau twin at 2), 3 at 11, and 0 at 9 (a window max among zeros)
        require(p.index.contentEquals(intArrayOf(1, 11, 9))) { "peaks ${p.index.contentToString()}" }
        require(p.score[0] == PanopticDecoder.sigmoid(5f)) { "score" }
        val two = PanopticDecoder(head, BooleanArray(1), DecodeSettings(numProposals = 2))
        require(two.findProposals(FeatureMap.ofFloats(3, 4, 1, v)).index.contentEquals(intArrayOf(1, 11))) { "K = 2" }
        val high = PanopticDecoder(head, BooleanArray(1), DecodeSettings(objectMaskThreshold = 0.9))
        require(high.findProposals(FeatureMap.ofFloats(3, 4, 1, v)).index.contentEquals(intArrayOf(1, 11))) { "threshold" }
    }
}

// -------------------------------------------------------------------------------------------------------------
// golden cases

class Case(val dir: File) {
    val meta = JSONObject(File(dir, "case.json").readText())
    val args: JSONObject = meta.getJSONObject("args")
    val inputs = Npz.read(File(dir, "inputs.npz"))
    val head = MaskHead.fromArrays(Npz.read(File(dir, "mask_head.npz")))
    val expected = Npz.read(File(dir, "expected.npz"))

    fun pair(key: String, default: IntArray?): IntArray? {
        if (!args.has(key) || args.isNull(key)) return default
        val a: JSONArray = args.getJSONArray(key)
        return intArrayOf(a.getInt(0), a.getInt(1))
    }

    fun map(name: String): FeatureMap {
        val a = inputs.getValue(name)
        val (h, w, c) = Triple(a.shape[0], a.shape[1], a.shape[2])
        val quant = meta.getJSONObject("quant")
        return if (a.dtype == "f4") FeatureMap.ofFloats(h, w, c, a.floats()) else {
            val q = quant.getJSONArray(name)
            FeatureMap.ofCodes(h, w, c, a.bytes(), q.getDouble(0).toFloat(), q.getDouble(1).toFloat(), a.dtype == "u1")
        }
    }

    fun decoder(): PanopticDecoder {
        val thing = BooleanArray(head.numClasses)
        if (args.has("thing_ids")) {
            val t = args.getJSONArray("thing_ids")
            for (i in 0 until t.length()) thing[t.getInt(i)] = true
        } else for (i in 1..90) if (i < thing.size) thing[i] = true
        val canvas = pair("canvas_size", intArrayOf(640, 640))!!
        val s = DecodeSettings(
            numProposals = args.optInt("num_proposals", 50),
            objectMaskThreshold = args.optDouble("object_mask_threshold", 0.01),
            overlapThreshold = args.optDouble("overlap_threshold", 0.7),
            smallAreaThreshold = args.optDouble("small_area_threshold", 256.0),
            canvasHeight = canvas[0],
            canvasWidth = canvas[1],
            stride = args.optInt("stride", 8)
        )
        return PanopticDecoder(head, thing, s)
    }

    /** The case's `mask_resolution` ("full" when absent). */
    val maskResolution: String = args.optString("mask_resolution", "full")

    /** How the expected mask logits map onto output pixels: resize plans, or grid axes for a grid mode. */
    fun geometry(): Geometry {
        val canvas = pair("canvas_size", intArrayOf(640, 640))!!
        val out = pair("output_size", canvas)!!
        val valid = pair("valid_size", null)
        val input = pair("input_size", null)
        val hm = inputs.getValue("heatmap").shape
        val dec = decoder()
        val vh = valid?.get(0) ?: -1
        val vw = valid?.get(1) ?: -1
        val ih = input?.get(0) ?: -1
        val iw = input?.get(1) ?: -1
        val f = GridMerge.factor(maskResolution)
        if (f == 0) return FullGeometry(dec.outputPlans(hm[0], hm[1], out[0], out[1], vh, vw, ih, iw))
        return GridGeometry(dec.gridAxes(hm[0] * f, hm[1] * f, out[0], out[1], vh, vw, ih, iw, hm[0], hm[1]))
    }

    /** Decode the case (by default a fresh decoder on freshly read maps, in the case's own mask resolution). */
    fun run(
        givenLogits: FloatArray? = null,
        mode: String = maskResolution,
        dec: PanopticDecoder = decoder(),
        maps: List<FeatureMap> = listOf(map("heatmap"), map("center_embeddings"), map("mask_features"))
    ): PanopticResult {
        val canvas = pair("canvas_size", intArrayOf(640, 640))!!
        val out = pair("output_size", canvas)!!
        val valid = pair("valid_size", null)
        val input = pair("input_size", null)
        return dec.decodeWith(
            maps[0], maps[1], maps[2], out[0], out[1],
            valid?.get(0) ?: -1, valid?.get(1) ?: -1, input?.get(0) ?: -1, input?.get(1) ?: -1, givenLogits, mode
        )
    }
}

fun ulpClose(a: Float, b: Float, ulps: Int): Boolean = Math.abs(a - b) <= ulps * Math.ulp(Math.max(Math.abs(a), Math.abs(b)))

/** The output geometry of a case: where an output pixel's logits come from in Python's `mask_logits`. */
interface Geometry {
    /** Python's logit of proposal q at output pixel (y, x), from its `mask_logits` `[h, w, K]` (or grid cells). */
    fun logit(logits: FloatArray, w: Int, k: Int, q: Int, y: Int, x: Int): Float

    /** How far a box edge may move when one output pixel goes to another proposal. */
    val boxStep: Int

    /**
     * Largest minus second-largest `sigmoid(logit) * score` over the proposals at output pixel (y, x), from
     * Python's logits (a near-tie there lets float rounding pick either winner).
     */
    fun winnerGap(logits: FloatArray, w: Int, k: Int, scores: FloatArray, y: Int, x: Int): Float {
        var best = -1f
        var second = -1f
        for (q in 0 until k) {
            val p = PanopticDecoder.sigmoid(logit(logits, w, k, q, y, x)) * scores[q]
            if (p > best) {
                second = best
                best = p
            } else if (p > second) second = p
        }
        return best - second
    }
}

/** "full": the logits bilinearly resized by the plans. */
class FullGeometry(val plans: PanopticDecoder.OutputPlans) : Geometry {
    override val boxStep = 1

    override fun logit(logits: FloatArray, w: Int, k: Int, q: Int, y: Int, x: Int): Float {
        val py = plans.y
        val px = plans.x
        val a = logits[(py.i0[y] * w + px.i0[x]) * k + q]
        val b = logits[(py.i0[y] * w + px.i1[x]) * k + q]
        val c = logits[(py.i1[y] * w + px.i0[x]) * k + q]
        val d = logits[(py.i1[y] * w + px.i1[x]) * k + q]
        val top = a + (b - a) * px.lerp[x]
        val bot = c + (d - c) * px.lerp[x]
        return top + (bot - top) * py.lerp[y]
    }
}

/** A grid mode: each output pixel takes the cell it falls into (Python's `mask_logits` hold the used cells). */
class GridGeometry(val axes: PanopticDecoder.GridAxes) : Geometry {
    override val boxStep = maxOf(axes.y.count.fold(1) { a, b -> maxOf(a, b) }, axes.x.count.fold(1) { a, b -> maxOf(a, b) })

    override fun logit(logits: FloatArray, w: Int, k: Int, q: Int, y: Int, x: Int): Float =
        logits[(axes.y.index[y] * w + axes.x.index[x]) * k + q]
}

/**
 * Compare a Kotlin result with the Python one under [geo] (the output geometry: resize plans or grid axes).
 *
 * [endToEnd] false (the merge run on Python's own mask logits): everything must be equal, except that a pixel
 * may go to the other proposal of a tie within float32 rounding of the sigmoid (NumPy's float32 exp and Java's
 * differ in the last bit for some inputs): gap <= 1e-6. [endToEnd] true: the Kotlin mask head (float32 loops)
 * and NumPy's (BLAS, another summation order) differ by at most 1e-5 of the largest logit; a pixel may differ
 * only where Python's own logits make the winner a near-tie within that difference. In both cases areas and
 * boxes may move only by such pixels and the segment list must be the same. Returns the number of tie pixels.
 */
fun compare(r: PanopticResult, e: Map<String, NpyArray>, geo: Geometry, endToEnd: Boolean): Int {
    val cls = e.getValue("proposal_classes").ints()
    val yx = e.getValue("proposal_yx").ints()
    val sc = e.getValue("proposal_scores").floats()
    require(r.numProposals == cls.size) { "${r.numProposals} proposals, Python has ${cls.size}" }
    for (q in cls.indices) {
        require(r.proposalClass[q] == cls[q] && r.proposalY[q] == yx[2 * q] && r.proposalX[q] == yx[2 * q + 1]) {
            "proposal $q is class ${r.proposalClass[q]} at (${r.proposalY[q]}, ${r.proposalX[q]}), Python: ${cls[q]} at (${yx[2 * q]}, ${yx[2 * q + 1]})"
        }
        require(ulpClose(r.proposalScore[q], sc[q], 2)) { "proposal $q score ${r.proposalScore[q]} vs ${sc[q]}" }
    }
    val ml = e.getValue("mask_logits")
    val logits = ml.floats()
    var maxDiff = 1e-6f  // tie tolerance of the merge alone
    if (endToEnd) {
        var maxAbs = 0f
        for (i in logits.indices) {
            maxAbs = Math.max(maxAbs, Math.abs(logits[i]))
            maxDiff = Math.max(maxDiff, Math.abs(logits[i] - r.maskLogits[i]))
        }
        require(maxDiff <= 1e-5f * Math.max(1f, maxAbs)) { "mask logits differ by up to $maxDiff (max |logit| $maxAbs)" }
    }
    val cat = e.getValue("category_mask")
    require(cat.shape[0] == r.height && cat.shape[1] == r.width) {
        "mask is ${r.height}x${r.width}, Python's ${cat.shape[0]}x${cat.shape[1]}"
    }
    val cm = cat.ints()
    val im = e.getValue("instance_mask").ints()
    val wm = e.getValue("winner").ints()
    var bad = 0
    for (i in cm.indices) {
        if (cm[i] == r.categoryMask[i] && im[i] == r.instanceMask[i] && wm[i] == r.winner[i]) continue
        val y = i / r.width
        val x = i % r.width
        val gap = geo.winnerGap(logits, ml.shape[1], ml.shape[2], sc, y, x)
        require(gap <= maxDiff) {
            "pixel (y=$y, x=$x) differs: Kotlin ${r.categoryMask[i]}/${r.instanceMask[i]} (proposal ${r.winner[i]}), " +
                "Python ${cm[i]}/${im[i]} (proposal ${wm[i]}), and is no near-tie (gap $gap > $maxDiff)"
        }
        bad++
    }
    val area = e.getValue("proposal_areas").longs()
    var areaMoved = 0L
    for (q in area.indices) areaMoved += Math.abs(area[q] - r.proposalArea[q])
    require(areaMoved <= 2L * bad) { "proposal areas ${r.proposalArea.contentToString()} vs ${area.contentToString()}" }
    val seg = e.getValue("proposal_segment").ints()
    require(r.proposalSegment.contentEquals(seg)) { "proposal segments differ" }
    val sCat = e.getValue("segment_category_ids").ints()
    val sInst = e.getValue("segment_instance_ids").ints()
    val sArea = e.getValue("segment_areas").longs()
    val sBox = e.getValue("segment_bboxes").ints()
    val sScore = e.getValue("segment_scores").floats()
    require(r.numSegments == sCat.size) { "${r.numSegments} segments, Python has ${sCat.size}" }
    require(r.segmentCategory.contentEquals(sCat) && r.segmentInstance.contentEquals(sInst)) { "segment ids differ" }
    for (s in sArea.indices) {
        require(Math.abs(r.segmentArea[s] - sArea[s]) <= bad) { "segment areas ${r.segmentArea.contentToString()} vs ${sArea.contentToString()}" }
    }
    for (i in sBox.indices) {
        require(Math.abs(r.segmentBbox[i] - sBox[i]) <= (if (bad > 0) geo.boxStep else 0)) { "segment boxes differ" }
    }
    for (s in sScore.indices) require(ulpClose(r.segmentScore[s], sScore[s], 2)) { "segment $s score" }
    return bad
}

fun writeResult(file: File, r: PanopticResult) {
    val k = r.numProposals
    val yx = IntArray(2 * k)
    for (q in 0 until k) {
        yx[2 * q] = r.proposalY[q]
        yx[2 * q + 1] = r.proposalX[q]
    }
    val ns = r.numSegments
    val arrays = linkedMapOf(
        "category_mask" to NpyArray.ofInts(intArrayOf(r.height, r.width), r.categoryMask),
        "instance_mask" to NpyArray.ofInts(intArrayOf(r.height, r.width), r.instanceMask),
        "segment_category_ids" to NpyArray.ofInts(intArrayOf(ns), r.segmentCategory),
        "segment_instance_ids" to NpyArray.ofInts(intArrayOf(ns), r.segmentInstance),
        "segment_scores" to NpyArray.ofFloats(intArrayOf(ns), r.segmentScore),
        "segment_areas" to NpyArray.ofLongs(intArrayOf(ns), r.segmentArea),
        "segment_bboxes" to NpyArray.ofInts(intArrayOf(ns, 4), r.segmentBbox),
        "proposal_classes" to NpyArray.ofInts(intArrayOf(k), r.proposalClass),
        "proposal_scores" to NpyArray.ofFloats(intArrayOf(k), r.proposalScore),
        "proposal_yx" to NpyArray.ofInts(intArrayOf(k, 2), yx),
        "proposal_areas" to NpyArray.ofLongs(intArrayOf(k), r.proposalArea),
        "proposal_segment" to NpyArray.ofInts(intArrayOf(k), r.proposalSegment),
        "winner" to NpyArray.ofInts(intArrayOf(r.height, r.width), r.winner)
    )
    Npz.write(file, arrays)
}

fun caseDirs(paths: List<String>): List<File> {
    val out = ArrayList<File>()
    for (p in paths) {
        val f = File(p)
        if (File(f, "case.json").isFile) out.add(f)
        else f.listFiles()?.filter { File(it, "case.json").isFile }?.sortedBy { it.name }?.let { out.addAll(it) }
    }
    return out
}

/** Letterbox cases (the .npz files in letterbox/ from the exporter): geometry exact, pixels compared with OpenCV's. */
fun letterboxChecks(paths: List<String>) {
    val files = paths.flatMap { p ->
        val d = File(p, "letterbox")
        d.listFiles()?.filter { it.name.endsWith(".npz") }?.sortedBy { it.name } ?: emptyList<File>()
    }
    for (f in files) {
        Runner.check("letterbox ${f.name.removeSuffix(".npz")}") {
            val a = Npz.read(f)
            val img = a.getValue("image")
            val size = a.getValue("size").ints()
            val want = a.getValue("canvas").bytes()
            val out = ByteArray(size[0] * size[1] * 3)
            val g = Letterbox.apply(img.bytes(), img.shape[0], img.shape[1], size[0], size[1], out)
            val valid = a.getValue("valid").ints()
            require(g.validH == valid[0] && g.validW == valid[1]) { "valid ${g.validH}x${g.validW}, Python ${valid[0]}x${valid[1]}" }
            require(g.scale == a.getValue("scale").floats()[0]) { "scale ${g.scale}" }
            var differ = 0
            var maxDiff = 0
            for (i in want.indices) {
                val d = Math.abs((want[i].toInt() and 0xFF) - (out[i].toInt() and 0xFF))
                if (d != 0) differ++
                if (d > maxDiff) maxDiff = d
            }
            println("     ${img.shape[0]}x${img.shape[1]} -> ${valid[0]}x${valid[1]} in ${size[0]}x${size[1]}: $differ of ${want.size} values differ from OpenCV (max $maxDiff)")
            require(differ == 0) { "$differ values differ from OpenCV's (max difference $maxDiff)" }
        }
    }
}

/** The model-file reader on a real .tflite written by the converter's metadata writer (folder model/). */
fun modelFileChecks(paths: List<String>) {
    for (p in paths) {
        val dir = File(p, "model")
        val file = File(dir, "tiny.tflite")
        if (!file.isFile) continue
        Runner.check("model file: metadata, labels, colours and mask head as the Python reader sees them") {
            val mf = ModelFile.read(file)
            val e = JSONObject(File(dir, "expected.json").readText())
            val info = mf.info
            require(info.configName == e.getString("config_name")) { "config ${info.configName}" }
            val inp = e.getJSONArray("input_size")
            require(info.inputHeight == inp.getInt(0) && info.inputWidth == inp.getInt(1)) { "input size" }
            require(info.numClasses == e.getInt("num_classes") && info.embeddingSize == e.getInt("embedding_size")) { "C/D" }
            require(info.numProposals == e.getInt("num_proposals")) { "num_proposals ${info.numProposals}" }
            require(info.smallAreaThreshold == e.getDouble("small_area_threshold")) { "small area" }
            require(info.objectMaskThreshold == e.getDouble("object_mask_threshold")) { "threshold" }
            require(info.overlapThreshold == e.getDouble("overlap_threshold")) { "overlap" }
            val things = e.getJSONArray("thing_ids")
            val table = info.thingTable()
            require(table.count { it } == things.length() && (0 until things.length()).all { table[things.getInt(it)] }) { "thing ids" }
            val labels = e.getJSONArray("labels")
            require(mf.labels == (0 until labels.length()).map { labels.getString(it) }) { "labels ${mf.labels}" }
            require(info.labels() == mf.labels) { "info labels ${info.labels()}" }
            val colors = e.getJSONArray("colors")
            val ids = e.getJSONArray("color_ids")
            for (i in 0 until ids.length()) require(info.colors()[ids.getInt(i)] == colors.getInt(i)) { "colour of ${ids.getInt(i)}" }
            require(info.conversion["quantization"] == e.getString("quantization")) { "conversion ${info.conversion}" }
            val head = Npz.read(File(dir, "mask_head.npz"))
            val mh = mf.maskHead
            require(mh.classEmbeddings.contentEquals(head.getValue("class_embeddings").floats())) { "class embeddings" }
            require(mh.dense0Kernel.contentEquals(head.getValue("mlp_dense0_kernel").floats())) { "dense0" }
            require(mh.dense1Bias.contentEquals(head.getValue("mlp_dense1_bias").floats())) { "dense1 bias" }
            require(mh.normGamma.contentEquals(head.getValue("mlp_norm_gamma").floats())) { "gamma" }
        }
        Runner.check("model file: truncated, foreign and empty files give clear errors") {
            val bytes = file.readBytes()
            expectThrows("associated files") { ModelFile.parse(bytes.copyOf(bytes.size - 40), "cut.tflite") }
            expectThrows("not a TFLite model") { ModelFile.parse("PK\u0003\u0004 not a model".toByteArray(), "x.zip") }
            expectThrows("not a TFLite model") { ModelFile.parse(ByteArray(0), "empty.tflite") }
        }
        Runner.check("model file: a decoder built from it decodes outputs of the model's shapes") {
            val mf = ModelFile.read(file)
            val info = mf.info
            val h = info.inputHeight / info.stride
            val w = info.inputWidth / info.stride
            val heat = FloatArray(h * w * info.numClasses) { -6f }
            heat[(1 * w + 2) * info.numClasses + 1] = 3f  // one "person" centre
            val emb = FloatArray(h * w * info.embeddingSize) { 0.5f }
            val r = PanopticDecoder(mf).decode(
                FeatureMap.ofFloats(h, w, info.numClasses, heat),
                FeatureMap.ofFloats(h, w, info.embeddingSize, emb),
                FeatureMap.ofFloats(h, w, info.embeddingSize, emb),
                60, 75, 32, 40
            )
            require(r.numProposals == 1 && r.proposalClass[0] == 1 && r.proposalY[0] == 1 && r.proposalX[0] == 2) { "proposal" }
            require(r.height == 60 && r.width == 75) { "mask size ${r.height}x${r.width}" }
        }
    }
}

/**
 * `--bench N`: decode each case N times after warm-up; prints the median per stage and of the whole decode in
 * every mask resolution (one decoder, maps read once; JVM, this machine).
 */
fun bench(cases: List<File>, n: Int) {
    for (dir in cases) {
        val c = Case(dir)
        val dec = c.decoder()
        val heat = c.map("heatmap")
        val center = c.map("center_embeddings")
        val feats = c.map("mask_features")
        val maps = listOf(heat, center, feats)
        val r0 = c.run(dec = dec, maps = maps)
        val pruned = c.decoder()
        pruned.keepMaskLogits = false
        val times = Array(4 + GridMerge.MODES.size) { DoubleArray(n) }
        for (rep in -5 until n) {
            val t0 = System.nanoTime()
            val props = dec.findProposals(heat)
            val t1 = System.nanoTime()
            val emb = dec.maskEmbeddings(center, props)
            val t2 = System.nanoTime()
            dec.maskLogits(feats, emb, props.size)
            val t3 = System.nanoTime()
            if (rep >= 0) {
                times[0][rep] = (t1 - t0) / 1e6
                times[1][rep] = (t2 - t1) / 1e6
                times[2][rep] = (t3 - t2) / 1e6
            }
            for ((m, mode) in GridMerge.MODES.withIndex()) {
                val s = System.nanoTime()
                c.run(mode = mode, dec = dec, maps = maps)
                if (rep >= 0) times[3 + m][rep] = (System.nanoTime() - s) / 1e6
            }
            val s = System.nanoTime()
            c.run(mode = "grid", dec = pruned, maps = maps)
            if (rep >= 0) times[3 + GridMerge.MODES.size][rep] = (System.nanoTime() - s) / 1e6
        }
        val med = times.map { it.sorted()[n / 2] }
        val modes = GridMerge.MODES.withIndex().joinToString(", ") { "%s %.2f ms".format(it.value, med[3 + it.index]) } +
            ", grid without mask logits %.2f ms".format(med[3 + GridMerge.MODES.size])
        println(
            "bench ${dir.name} (${r0.height}x${r0.width}, K=${r0.numProposals}): peaks+top-K %.2f ms, mask head %.2f ms, mask logits %.2f ms; whole decode: %s (median of $n)"
                .format(med[0], med[1], med[2], modes)
        )
    }
}

fun main(args: Array<String>) {
    var outDir: File? = null
    var benchN = 0
    val paths = ArrayList<String>()
    var i = 0
    while (i < args.size) {
        if (args[i] == "--out") {
            outDir = File(args[i + 1])
            i += 2
        } else if (args[i] == "--bench") {
            benchN = args[i + 1].toInt()
            i += 2
        } else paths.add(args[i++])
    }
    if (benchN > 0) {
        bench(caseDirs(paths), benchN)
        return
    }
    outDir?.mkdirs()
    unitChecks()
    letterboxChecks(paths)
    modelFileChecks(paths)
    val cases = caseDirs(paths)
    val extras = paths.any { File(it, "letterbox").isDirectory || File(it, "model").isDirectory }
    if (paths.isNotEmpty() && cases.isEmpty() && !extras) {
        Runner.failed++
        println("FAIL no golden case folders (with case.json) under ${paths.joinToString()}")
    }
    for (dir in cases) {
        var c: Case? = null
        Runner.check("${dir.name}: reading the case") { c = Case(dir) }
        val case = c ?: continue
        // 1. the merge alone, on Python's own mask logits: must match exactly
        Runner.check("${dir.name}: merge on Python's mask logits") {
            val r = case.run(case.expected.getValue("mask_logits").floats())
            outDir?.let { writeResult(File(it, "${dir.name}.merge.npz"), r) }
            val ties = compare(r, case.expected, case.geometry(), false)
            if (ties > 0) println("     $ties pixels went the other way in float32 ties")
        }
        // 3. the grid merge that computes only the logits it needs: the same labels, areas and segments
        Runner.check("${dir.name}: grid merge without mask logits (pruned per cell) = with them") {
            val a = case.run(mode = "grid")
            val dec = case.decoder()
            dec.keepMaskLogits = false
            val b = case.run(mode = "grid", dec = dec)
            require(b.maskLogits.isEmpty() && (a.numProposals == 0 || a.maskLogits.isNotEmpty())) { "mask logits kept / dropped wrongly" }
            require(a.categoryMask.contentEquals(b.categoryMask) && a.instanceMask.contentEquals(b.instanceMask)) { "label maps differ" }
            require(a.winner.contentEquals(b.winner) && a.proposalArea.contentEquals(b.proposalArea)) { "winners differ" }
            require(
                a.segmentCategory.contentEquals(b.segmentCategory) && a.segmentInstance.contentEquals(b.segmentInstance) &&
                    a.segmentArea.contentEquals(b.segmentArea) && a.segmentBbox.contentEquals(b.segmentBbox) &&
                    a.segmentScore.contentEquals(b.segmentScore) && a.proposalSegment.contentEquals(b.proposalSegment)
            ) { "segments differ" }
            // the MLP ran only for proposals some cell needed: never more than K, fewer on the trained demo model
            val rows = dec.lastMaskHeadRows
            require(rows <= a.numProposals && (a.numProposals == 0 || rows >= 1)) { "mask-head rows $rows of ${a.numProposals}" }
            if (dir.name == "demo_int8_grid") require(rows < a.numProposals) { "every proposal ran the MLP ($rows)" }
            println("     mask head ran for $rows of ${a.numProposals} proposals")
        }
        // 2. end to end
        Runner.check("${dir.name}: end to end (${case.meta.optInt("num_segments")} segments)") {
            val t0 = System.nanoTime()
            val r = case.run()
            val ms = (System.nanoTime() - t0) / 1e6
            outDir?.let { writeResult(File(it, "${dir.name}.npz"), r) }
            val ties = compare(r, case.expected, case.geometry(), true)
            println(
                "     ${r.numProposals} proposals, ${r.numSegments} segments, ${r.height}x${r.width}, " +
                    "$ties near-tie pixels differ, %.1f ms".format(ms)
            )
        }
    }
    println("${Runner.passed} passed, ${Runner.failed} failed")
    if (Runner.failed > 0) System.exit(1)
}
