package com.maskconver.demo

import android.content.Context
import android.os.SystemClock
import com.maskconver.decoder.FeatureMap
import com.maskconver.decoder.Letterbox
import com.maskconver.decoder.ModelFile
import com.maskconver.decoder.ModelFileException
import com.maskconver.decoder.PanopticDecoder
import com.maskconver.decoder.PanopticResult
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.Tensor
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.security.MessageDigest

/** One frame's segmentation and where the time went (milliseconds). */
class FrameResult(val result: PanopticResult, val preMs: Double, val inferMs: Double, val postMs: Double) {
    val totalMs: Double get() = preMs + inferMs + postMs
}

/**
 * The whole per-frame pipeline on one thread: letterbox (exactly the Python runtime's), LiteRT inference
 * through the `serving_default` signature, and the Kotlin port of the Python decoder. Everything model-specific
 * (input size, thresholds, thing ids, labels, colours, mask head) comes from the model file's metadata.
 *
 * Create it on the thread that will call [process] (GPU delegate rule); not thread-safe.
 */
class Segmenter private constructor(val model: ModelFile, val engine: Engine) : AutoCloseable {
    private val info = model.info
    private val interpreter: Interpreter = engine.interpreter
    // the live app never reads the mask logits: the grid merge computes only the ones that can win a cell
    private val decoder = PanopticDecoder(model).apply { keepMaskLogits = false }
    private val inputTensor: Tensor = interpreter.getInputTensorFromSignature(INPUT, SIGNATURE)
    private val input: ByteBuffer = ByteBuffer.allocateDirect(inputTensor.numBytes()).order(ByteOrder.nativeOrder())
    private val outBuffers = HashMap<String, ByteBuffer>()
    private val outputs = HashMap<String, Any>()  // the same buffers, typed as runSignature wants them
    private val outTensors = HashMap<String, Tensor>()
    private val outBytes = HashMap<String, ByteArray>()
    private val outFloats = HashMap<String, FloatArray>()
    private val canvas = ByteArray(info.inputHeight * info.inputWidth * 3)

    /**
     * The decoder's merge ([PanopticDecoder.decode] `maskResolution`): [LIVE_MASK_RESOLUTION] ("grid", the merge on
     * the feature grid, blocky masks at a fraction of the decoding cost) or "full" (the reference merge at the
     * mask size, as the Python runtime's default). Set it on the thread that calls [process].
     */
    var maskResolution: String = LIVE_MASK_RESOLUTION

    init {
        for (name in OUTPUTS) {
            val t = interpreter.getOutputTensorFromSignature(name, SIGNATURE)
            outTensors[name] = t
            val b = ByteBuffer.allocateDirect(t.numBytes()).order(ByteOrder.nativeOrder())
            outBuffers[name] = b
            outputs[name] = b
        }
    }

    /**
     * Segment an upright RGB frame `[h * w * 3]`. Masks come out at `outH x outW` (the frame's aspect, any
     * size: the overlay uses a reduced one), in the Python runtime's original-resolution mode.
     */
    fun process(rgb: ByteArray, h: Int, w: Int, outH: Int, outW: Int): FrameResult {
        val t0 = SystemClock.elapsedRealtimeNanos()
        val g = Letterbox.apply(rgb, h, w, info.inputHeight, info.inputWidth, canvas, info.padValue)
        fillInput()
        val t1 = SystemClock.elapsedRealtimeNanos()
        for (b in outBuffers.values) b.rewind()
        interpreter.runSignature(mapOf<String, Any>(INPUT to input), outputs, SIGNATURE)
        val t2 = SystemClock.elapsedRealtimeNanos()
        val heat = featureMap("heatmap")
        val center = featureMap("center_embeddings")
        val feats = featureMap("mask_features")
        val r = decoder.decode(heat, center, feats, outH, outW, g.validH, g.validW, info.inputHeight, info.inputWidth, maskResolution)
        val t3 = SystemClock.elapsedRealtimeNanos()
        return FrameResult(r, (t1 - t0) / 1e6, (t2 - t1) / 1e6, (t3 - t2) / 1e6)
    }

    private fun fillInput() {
        input.rewind()
        when (inputTensor.dataType()) {
            DataType.UINT8 -> input.put(canvas)
            DataType.FLOAT32 -> {
                // --float-input models take (x - mean) / std
                val m = info.mean
                val inv = FloatArray(3) { 1f / info.std[it] }
                for (i in canvas.indices) {
                    val c = i % 3
                    input.putFloat(((canvas[i].toInt() and 0xFF) - m[c]) * inv[c])
                }
            }
            else -> throw ModelFileException("model input is ${inputTensor.dataType()}; expected uint8 or float32")
        }
        input.rewind()
    }

    private fun featureMap(name: String): FeatureMap {
        val t = outTensors.getValue(name)
        val s = t.shape()
        if (s.size != 4 || s[0] != 1) throw ModelFileException("output $name has shape ${s.contentToString()}; expected [1, h, w, c]")
        val buf = outBuffers.getValue(name)
        buf.rewind()
        return when (t.dataType()) {
            DataType.FLOAT32 -> {
                val a = outFloats.getOrPut(name) { FloatArray(s[1] * s[2] * s[3]) }
                buf.asFloatBuffer().get(a)
                FeatureMap.ofFloats(s[1], s[2], s[3], a)
            }
            DataType.INT8, DataType.UINT8 -> {
                val a = outBytes.getOrPut(name) { ByteArray(s[1] * s[2] * s[3]) }
                buf.get(a)
                val q = t.quantizationParams()
                FeatureMap.ofCodes(s[1], s[2], s[3], a, q.scale, q.zeroPoint.toFloat(), t.dataType() == DataType.UINT8)
            }
            else -> throw ModelFileException("output $name is ${t.dataType()}; expected float32, int8 or uint8")
        }
    }

    override fun close() = engine.close()

    companion object {
        const val SIGNATURE = "serving_default"
        const val INPUT = "image"
        val OUTPUTS = listOf("heatmap", "center_embeddings", "mask_features")
        const val MODEL_NAME = "maskconver.tflite"
        /** The live camera path's merge: "grid" (real-time) or "full" (reference, slower); tap the status to switch. */
        const val LIVE_MASK_RESOLUTION = "grid"

        /**
         * The model: `getExternalFilesDir()/maskconver.tflite` if present (adb push), else the APK asset
         * `maskconver.tflite`. Returns its bytes and where it came from.
         */
        fun findModel(context: Context): Pair<ByteArray, String> {
            val ext = context.getExternalFilesDir(null)?.let { File(it, MODEL_NAME) }
            if (ext != null && ext.isFile) return Pair(ext.readBytes(), ext.path)
            try {
                context.assets.open(MODEL_NAME).use { return Pair(it.readBytes(), "assets/$MODEL_NAME") }
            } catch (e: java.io.IOException) {
                throw ModelFileException(
                    "no model: put $MODEL_NAME in app/src/main/assets/ before building, or adb push it to " +
                        "${ext?.path ?: "the app's external files folder"}"
                )
            }
        }

        /** Parse the model file's metadata, then build the interpreter (GPU -> NNAPI -> CPU) and warm it up. */
        fun create(context: Context, bytes: ByteArray, where: String, threads: Int = 4): Segmenter {
            val model = ModelFile.parse(bytes, where)
            val buffer = ByteBuffer.allocateDirect(bytes.size).order(ByteOrder.nativeOrder())
            buffer.put(bytes)
            buffer.rewind()
            val digest = MessageDigest.getInstance("SHA-256").digest(bytes)
            val token = "maskconver_" + digest.take(12).joinToString("") { "%02x".format(it) }
            val engine = InterpreterFactory.create(context, buffer, token, threads) { interp ->
                checkSignature(interp, where)
                // one inference on the padding colour: delegates can fail at invoke time, not only when applied
                val t = interp.getInputTensorFromSignature(INPUT, SIGNATURE)
                val inp = ByteBuffer.allocateDirect(t.numBytes()).order(ByteOrder.nativeOrder())
                val outs = HashMap<String, Any>()
                for (name in OUTPUTS) {
                    val o = interp.getOutputTensorFromSignature(name, SIGNATURE)
                    outs[name] = ByteBuffer.allocateDirect(o.numBytes()).order(ByteOrder.nativeOrder())
                }
                interp.runSignature(mapOf<String, Any>(INPUT to inp), outs, SIGNATURE)
            }
            return Segmenter(model, engine)
        }

        private fun checkSignature(interp: Interpreter, where: String) {
            if (SIGNATURE !in interp.signatureKeys) {
                throw ModelFileException("$where has no '$SIGNATURE' signature; re-convert it with maskconver-convert")
            }
            val outs = interp.getSignatureOutputs(SIGNATURE).toSet()
            val missing = OUTPUTS.filter { it !in outs }
            if (missing.isNotEmpty() || INPUT !in interp.getSignatureInputs(SIGNATURE)) {
                throw ModelFileException("$where: signature outputs $outs lack ${missing.joinToString()} (or no '$INPUT' input)")
            }
        }
    }
}
