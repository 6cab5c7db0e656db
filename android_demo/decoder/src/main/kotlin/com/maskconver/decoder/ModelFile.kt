package com.maskconver.decoder

import java.io.File

/**
 * The float32 weights the decoder needs after top-K (`mask_head.npz`): class embeddings `[C, D]`,
 * MLP Dense `[D, H]` + bias `[H]`, LayerNorm gamma/beta `[H]` (epsilon 1e-6), ReLU, Dense `[H, D]` + bias `[D]`.
 * All arrays row-major.
 */
class MaskHead(
    val numClasses: Int,
    val dim: Int,
    val hidden: Int,
    val classEmbeddings: FloatArray,
    val dense0Kernel: FloatArray,
    val dense0Bias: FloatArray,
    val normGamma: FloatArray,
    val normBeta: FloatArray,
    val dense1Kernel: FloatArray,
    val dense1Bias: FloatArray
) {
    companion object {
        val KEYS = listOf(
            "class_embeddings", "mlp_dense0_kernel", "mlp_dense0_bias", "mlp_norm_gamma", "mlp_norm_beta",
            "mlp_dense1_kernel", "mlp_dense1_bias"
        )

        /** From the arrays of `mask_head.npz`, checked against C and D (pass -1 to take them from the arrays). */
        fun fromArrays(a: Map<String, NpyArray>, numClasses: Int = -1, dim: Int = -1): MaskHead {
            val missing = KEYS.filter { it !in a }
            if (missing.isNotEmpty()) {
                throw ModelFileException("mask_head.npz lacks ${missing.joinToString()}; re-convert the model")
            }
            val emb = a.getValue("class_embeddings")
            val k0 = a.getValue("mlp_dense0_kernel")
            val k1 = a.getValue("mlp_dense1_kernel")
            if (emb.shape.size != 2 || k0.shape.size != 2 || k1.shape.size != 2) {
                throw ModelFileException("mask_head.npz: class_embeddings and the MLP kernels must be 2-D")
            }
            val c = emb.shape[0]
            val d = emb.shape[1]
            val h = k0.shape[1]
            if ((numClasses >= 0 && c != numClasses) || (dim >= 0 && d != dim)) {
                throw ModelFileException(
                    "mask_head.npz class_embeddings is [$c, $d] but the model has C=$numClasses, D=$dim; re-convert the model"
                )
            }
            val want = mapOf(
                "mlp_dense0_kernel" to intArrayOf(d, h), "mlp_dense0_bias" to intArrayOf(h),
                "mlp_norm_gamma" to intArrayOf(h), "mlp_norm_beta" to intArrayOf(h),
                "mlp_dense1_kernel" to intArrayOf(h, d), "mlp_dense1_bias" to intArrayOf(d)
            )
            for ((key, shape) in want) {
                if (!a.getValue(key).shape.contentEquals(shape)) {
                    throw ModelFileException(
                        "mask_head.npz $key has shape ${a.getValue(key).shape.contentToString()}, expected ${shape.contentToString()}"
                    )
                }
            }
            return MaskHead(
                c, d, h, emb.floats(), k0.floats(), a.getValue("mlp_dense0_bias").floats(),
                a.getValue("mlp_norm_gamma").floats(), a.getValue("mlp_norm_beta").floats(), k1.floats(),
                a.getValue("mlp_dense1_bias").floats()
            )
        }
    }
}

/**
 * What the app needs from a maskconver `.tflite` besides the graph: the associated files zipped onto its end
 * (`maskconver.json`, `labels.txt`, `mask_head.npz`), parsed. Nothing is duplicated by hand in the app.
 */
class ModelFile(val info: ModelInfo, val labels: List<String>, val maskHead: MaskHead) {
    companion object {
        const val INFO_FILE = "maskconver.json"
        const val LABELS_FILE = "labels.txt"
        const val MASK_HEAD_FILE = "mask_head.npz"
        private const val FIX = "convert the model with maskconver-convert (it writes the metadata)"

        fun read(file: File): ModelFile = parse(file.readBytes(), file.path)

        /** Parse the bytes of a `.tflite` model file (flatbuffer + TFLite metadata + zipped associated files). */
        fun parse(bytes: ByteArray, where: String = "model"): ModelFile {
            if (bytes.size < 8 || String(bytes, 4, 4, Charsets.ISO_8859_1) != "TFL3") {
                throw ModelFileException("$where is not a TFLite model (no TFL3 identifier); pick the .tflite file")
            }
            val files = try {
                ZipBytes.entries(bytes, where)
            } catch (e: ModelFileException) {
                throw ModelFileException("$where: the associated files are missing (${e.message}); $FIX")
            }
            for (name in listOf(INFO_FILE, LABELS_FILE, MASK_HEAD_FILE)) {
                if (name !in files) throw ModelFileException("$where: $name is not in the model's zip (found ${files.keys}); $FIX")
            }
            val info = ModelInfo.parse(String(files.getValue(INFO_FILE), Charsets.UTF_8))
            val labels = String(files.getValue(LABELS_FILE), Charsets.UTF_8).split('\n').dropLastWhile { it == "" }
            if (labels.size != info.numClasses) {
                throw ModelFileException("$where: labels.txt has ${labels.size} lines for ${info.numClasses} classes; $FIX")
            }
            val head = MaskHead.fromArrays(Npz.parse(files.getValue(MASK_HEAD_FILE), "$where/$MASK_HEAD_FILE"), info.numClasses, info.embeddingSize)
            return ModelFile(info, labels, head)
        }
    }
}
