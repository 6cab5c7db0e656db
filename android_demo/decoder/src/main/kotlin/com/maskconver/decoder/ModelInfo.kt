package com.maskconver.decoder

import org.json.JSONArray
import org.json.JSONException
import org.json.JSONObject

/** One category of the model (id 0 = void). [color] is packed 0xRRGGBB. */
class Category(val id: Int, val name: String, val isThing: Boolean, val color: Int)

/**
 * The `maskconver.json` contract (the Python `maskconver.runtime.model_info.ModelInfo`): everything the
 * runtime needs besides the graph and `mask_head.npz`. Field names and defaults are the Python ones.
 */
class ModelInfo(
    val configName: String,
    val inputHeight: Int,
    val inputWidth: Int,
    val numClasses: Int,
    val embeddingSize: Int,
    val categories: List<Category>,
    val stride: Int = 8,
    val numProposals: Int = 50,
    val peakKernel: Int = 3,
    val objectMaskThreshold: Double = 0.01,
    val overlapThreshold: Double = 0.7,
    val smallAreaThreshold: Double = 256.0,
    val canvasHeight: Int = 640,
    val canvasWidth: Int = 640,
    val mean: FloatArray = floatArrayOf(123.675f, 116.28f, 103.53f),
    val std: FloatArray = floatArrayOf(58.395f, 57.12f, 57.375f),
    val padValue: IntArray = intArrayOf(124, 116, 104),
    val inputDtype: String = "uint8",
    val conversion: Map<String, String> = emptyMap()
) {
    /** Bool `[C]`: true where the category id is a thing class. */
    fun thingTable(): BooleanArray {
        val t = BooleanArray(numClasses)
        for (c in categories) if (c.isThing && c.id in 0 until numClasses) t[c.id] = true
        return t
    }

    /** Names by id 0..C-1 (`class_<id>` where no category names the id, as the Python `labels()`). */
    fun labels(): List<String> {
        val names = HashMap<Int, String>()
        for (c in categories) names[c.id] = c.name
        return (0 until numClasses).map { names[it] ?: "class_$it" }
    }

    /** Colour (0xRRGGBB) by id 0..C-1 (grey where no category names the id). */
    fun colors(): IntArray {
        val out = IntArray(numClasses) { 0x808080 }
        for (c in categories) if (c.id in 0 until numClasses) out[c.id] = c.color
        return out
    }

    /** The decoder settings this model prescribes. */
    fun decodeSettings(): DecodeSettings = DecodeSettings(
        numProposals = numProposals,
        objectMaskThreshold = objectMaskThreshold,
        overlapThreshold = overlapThreshold,
        smallAreaThreshold = smallAreaThreshold,
        canvasHeight = canvasHeight,
        canvasWidth = canvasWidth,
        stride = stride
    )

    companion object {
        const val FORMAT_VERSION = 1

        private fun fail(msg: String): Nothing = throw ModelFileException("maskconver.json: $msg; re-convert the model")

        private fun pair(d: JSONObject, key: String, default: IntArray?): IntArray {
            if (!d.has(key)) return default ?: fail("lacks $key")
            val a = d.getJSONArray(key)
            if (a.length() != 2) fail("$key must hold two numbers (height, width), got $a")
            return intArrayOf(a.getInt(0), a.getInt(1))
        }

        private fun floats(d: JSONObject, key: String, default: FloatArray): FloatArray {
            if (!d.has(key)) return default
            val a = d.getJSONArray(key)
            return FloatArray(a.length()) { a.getDouble(it).toFloat() }
        }

        /** Parse the text of `maskconver.json`; a wrong version, missing or malformed field raises with the fix. */
        fun parse(text: String): ModelInfo {
            val d = try {
                JSONObject(text)
            } catch (e: JSONException) {
                fail("not valid JSON (${e.message})")
            }
            try {
                val version = if (d.has("format_version")) d.get("format_version") else null
                if (version !is Int || version != FORMAT_VERSION) {
                    fail("format_version $version is not supported (expected $FORMAT_VERSION)")
                }
                val missing = listOf("config_name", "input_size", "num_classes", "embedding_size", "categories")
                    .filter { !d.has(it) }
                if (missing.isNotEmpty()) fail("lacks ${missing.joinToString()}")
                val cats = ArrayList<Category>()
                val ca: JSONArray = d.getJSONArray("categories")
                for (i in 0 until ca.length()) {
                    val c = ca.getJSONObject(i)
                    val col = c.getJSONArray("color")
                    if (col.length() != 3) fail("category ${c.opt("id")} colour must be [r, g, b]")
                    val rgb = ((col.getInt(0) and 0xFF) shl 16) or ((col.getInt(1) and 0xFF) shl 8) or (col.getInt(2) and 0xFF)
                    cats.add(Category(c.getInt("id"), c.getString("name"), c.getBoolean("isthing"), rgb))
                }
                val input = pair(d, "input_size", null)
                val canvas = pair(d, "canvas_size", intArrayOf(640, 640))
                val pad = if (d.has("pad_value")) {
                    val a = d.getJSONArray("pad_value")
                    IntArray(a.length()) { a.getInt(it) }
                } else intArrayOf(124, 116, 104)
                val conv = HashMap<String, String>()
                d.optJSONObject("conversion")?.let { o ->
                    val keys = o.keys()
                    while (keys.hasNext()) {
                        val k = keys.next()
                        conv[k] = o.get(k).toString()
                    }
                }
                val info = ModelInfo(
                    configName = d.getString("config_name"),
                    inputHeight = input[0],
                    inputWidth = input[1],
                    numClasses = d.getInt("num_classes"),
                    embeddingSize = d.getInt("embedding_size"),
                    categories = cats,
                    stride = d.optInt("stride", 8),
                    numProposals = d.optInt("num_proposals", 50),
                    peakKernel = d.optInt("peak_kernel", 3),
                    objectMaskThreshold = d.optDouble("object_mask_threshold", 0.01),
                    overlapThreshold = d.optDouble("overlap_threshold", 0.7),
                    smallAreaThreshold = d.optDouble("small_area_threshold", 256.0),
                    canvasHeight = canvas[0],
                    canvasWidth = canvas[1],
                    mean = floats(d, "mean", floatArrayOf(123.675f, 116.28f, 103.53f)),
                    std = floats(d, "std", floatArrayOf(58.395f, 57.12f, 57.375f)),
                    padValue = pad,
                    inputDtype = d.optString("input_dtype", "uint8"),
                    conversion = conv
                )
                if (info.inputHeight <= 0 || info.inputWidth <= 0 || info.numClasses <= 0 || info.embeddingSize <= 0) {
                    fail("input_size/num_classes/embedding_size are invalid")
                }
                if (info.padValue.size != 3) fail("pad_value must hold three numbers (r, g, b)")
                if (info.peakKernel != 3) fail("peak_kernel ${info.peakKernel} is not supported (only 3)")
                return info
            } catch (e: JSONException) {
                fail("has a malformed field (${e.message})")
            }
        }
    }
}

/** The decoder's settings (defaults as in the Python `decode_panoptic`). */
class DecodeSettings(
    val numProposals: Int = 50,
    val objectMaskThreshold: Double = 0.01,
    val overlapThreshold: Double = 0.7,
    val smallAreaThreshold: Double = 256.0,
    val canvasHeight: Int = 640,
    val canvasWidth: Int = 640,
    val stride: Int = 8
)
