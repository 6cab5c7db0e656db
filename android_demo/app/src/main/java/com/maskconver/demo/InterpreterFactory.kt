package com.maskconver.demo

import android.content.Context
import android.os.Build
import android.os.SystemClock
import android.util.Log
import com.maskconver.decoder.ModelFileException
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.gpu.CompatibilityList
import org.tensorflow.lite.gpu.GpuDelegate
import org.tensorflow.lite.gpu.GpuDelegateFactory
import org.tensorflow.lite.nnapi.NnApiDelegate
import java.io.File
import java.nio.ByteBuffer

enum class Backend(val label: String) {
    GPU("GPU delegate"),
    NNAPI("NNAPI delegate"),
    CPU("CPU (XNNPACK)")
}

/** A backend that was tried and given up, and why (shown on screen). */
class Fallback(val backend: Backend, val reason: String)

/** A ready interpreter: which backend runs it, what was given up on the way, and how long setup took. */
class Engine(
    val interpreter: Interpreter,
    val backend: Backend,
    val fallbacks: List<Fallback>,
    val initMs: Double,
    val firstRunMs: Double,
    private val delegate: AutoCloseable?
) : AutoCloseable {
    override fun close() {
        interpreter.close()
        delegate?.close()
    }
}

/**
 * Builds the LiteRT interpreter trying the GPU delegate first, then NNAPI, then the XNNPACK CPU path, and
 * records the reason for every fallback. Each candidate must also survive a first inference ([warmUp]):
 * delegates can fail at invoke time, not only when applied.
 *
 * GPU: the delegate's compiled programs are cached in `cacheDir/gpu_delegate_cache` under a token derived from
 * the model bytes (serialization), which cuts the multi-second first initialisation on later launches.
 *
 * Must be called on the thread that will run inference (the GPU delegate is bound to its creating thread).
 */
object InterpreterFactory {
    private const val TAG = "MaskConver"

    fun create(context: Context, model: ByteBuffer, modelToken: String, threads: Int, warmUp: (Interpreter) -> Unit): Engine {
        val fallbacks = ArrayList<Fallback>()
        tryGpu(context, model, modelToken, warmUp, fallbacks)?.let { return it }
        tryNnapi(model, warmUp, fallbacks)?.let { return it }
        val t0 = SystemClock.elapsedRealtimeNanos()
        val options = Interpreter.Options().setNumThreads(threads).setUseXNNPACK(true)
        val interpreter = Interpreter(model, options)
        val t1 = SystemClock.elapsedRealtimeNanos()
        warmUp(interpreter)
        val t2 = SystemClock.elapsedRealtimeNanos()
        return Engine(interpreter, Backend.CPU, fallbacks, (t1 - t0) / 1e6, (t2 - t1) / 1e6, null)
    }

    private fun reasonOf(e: Throwable): String {
        val msg = (e.message ?: e.javaClass.simpleName).lineSequence().map { it.trim() }.filter { it.isNotEmpty() }.take(3)
        return msg.joinToString(" / ").take(240)
    }

    private fun tryGpu(
        context: Context,
        model: ByteBuffer,
        token: String,
        warmUp: (Interpreter) -> Unit,
        fallbacks: MutableList<Fallback>
    ): Engine? {
        var delegate: GpuDelegate? = null
        var interpreter: Interpreter? = null
        try {
            val compat = CompatibilityList()
            if (!compat.isDelegateSupportedOnThisDevice) {
                fallbacks.add(Fallback(Backend.GPU, "not supported on this device (GPU compatibility list)"))
                compat.close()
                return null
            }
            val cache = File(context.cacheDir, "gpu_delegate_cache").apply { mkdirs() }
            val cached = cache.listFiles()?.any { it.name.contains(token) } == true
            val opts = compat.bestOptionsForThisDevice
            compat.close()
            opts.setQuantizedModelsAllowed(true)
            opts.setInferencePreference(GpuDelegateFactory.Options.INFERENCE_PREFERENCE_SUSTAINED_SPEED)
            opts.setSerializationParams(cache.absolutePath, token)
            val t0 = SystemClock.elapsedRealtimeNanos()
            delegate = GpuDelegate(opts)
            interpreter = Interpreter(model, Interpreter.Options().addDelegate(delegate))
            val t1 = SystemClock.elapsedRealtimeNanos()
            warmUp(interpreter)
            val t2 = SystemClock.elapsedRealtimeNanos()
            Log.i(TAG, "GPU delegate ready in %.0f ms (kernel cache %s)".format((t1 - t0) / 1e6, if (cached) "hit" else "miss"))
            return Engine(interpreter, Backend.GPU, fallbacks, (t1 - t0) / 1e6, (t2 - t1) / 1e6, delegate)
        } catch (e: ModelFileException) {  // the model itself is wrong: no backend will help
            interpreter?.close()
            delegate?.close()
            throw e
        } catch (e: Throwable) {  // IllegalArgumentException from the delegate, UnsatisfiedLinkError, ...
            Log.w(TAG, "GPU delegate failed", e)
            fallbacks.add(Fallback(Backend.GPU, reasonOf(e)))
            interpreter?.close()
            delegate?.close()
            return null
        }
    }

    private fun tryNnapi(model: ByteBuffer, warmUp: (Interpreter) -> Unit, fallbacks: MutableList<Fallback>): Engine? {
        if (Build.VERSION.SDK_INT < Build.VERSION_CODES.P) {
            fallbacks.add(Fallback(Backend.NNAPI, "Android ${Build.VERSION.RELEASE} is older than 9 (NNAPI 1.1 lacks int8 ops)"))
            return null
        }
        var delegate: NnApiDelegate? = null
        var interpreter: Interpreter? = null
        try {
            val opts = NnApiDelegate.Options()
                .setExecutionPreference(NnApiDelegate.Options.EXECUTION_PREFERENCE_SUSTAINED_SPEED)
                .setAllowFp16(true)
                .setUseNnapiCpu(false)  // the reference CPU path is slower than XNNPACK: fall back instead
            val t0 = SystemClock.elapsedRealtimeNanos()
            delegate = NnApiDelegate(opts)
            interpreter = Interpreter(model, Interpreter.Options().addDelegate(delegate))
            val t1 = SystemClock.elapsedRealtimeNanos()
            warmUp(interpreter)
            val t2 = SystemClock.elapsedRealtimeNanos()
            return Engine(interpreter, Backend.NNAPI, fallbacks, (t1 - t0) / 1e6, (t2 - t1) / 1e6, delegate)
        } catch (e: ModelFileException) {
            interpreter?.close()
            delegate?.close()
            throw e
        } catch (e: Throwable) {
            Log.w(TAG, "NNAPI delegate failed", e)
            fallbacks.add(Fallback(Backend.NNAPI, reasonOf(e)))
            interpreter?.close()
            delegate?.close()
            return null
        }
    }
}
