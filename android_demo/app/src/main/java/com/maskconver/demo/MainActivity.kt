package com.maskconver.demo

import android.Manifest
import android.content.pm.PackageManager
import android.os.Bundle
import android.os.SystemClock
import android.util.Log
import android.util.Size
import android.widget.TextView
import androidx.activity.result.contract.ActivityResultContracts
import androidx.appcompat.app.AppCompatActivity
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.ImageProxy
import androidx.camera.core.Preview
import androidx.camera.core.resolutionselector.AspectRatioStrategy
import androidx.camera.core.resolutionselector.ResolutionSelector
import androidx.camera.core.resolutionselector.ResolutionStrategy
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.camera.view.PreviewView
import androidx.core.content.ContextCompat
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/**
 * Live MaskConver panoptic segmentation of the back camera.
 *
 * Frames: CameraX ImageAnalysis with STRATEGY_KEEP_ONLY_LATEST, so while a frame is being segmented newer
 * frames replace each other and only the latest is processed (frames are dropped, latency does not build up).
 * Everything runs on one analysis thread: model loading, the interpreter (GPU delegate thread rule), letterbox,
 * inference and decoding. The status bar shows the backend, every fallback with its reason, the delegate's
 * init time, p50 latency per stage and FPS. Tapping the status bar switches the decoder's merge between "grid"
 * (the default, [Segmenter.LIVE_MASK_RESOLUTION]: on the feature grid, blocky masks, a fraction of the decoding
 * cost) and "full" (the reference merge at the mask size).
 */
class MainActivity : AppCompatActivity() {
    private lateinit var previewView: PreviewView
    private lateinit var overlay: OverlayView
    private lateinit var status: TextView
    private val analysisThread: ExecutorService = Executors.newSingleThreadExecutor()
    private var segmenter: Segmenter? = null
    private var loadError: String? = null
    private val converter = FrameConverter()
    private val stats = LatencyStats()
    private var header = ""
    private var colors = IntArray(0)
    private var lastStatus = 0L

    private val permission = registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
        if (granted) startCamera() else status.text = getString(R.string.no_permission)
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        previewView = findViewById(R.id.preview)
        overlay = findViewById(R.id.overlay)
        status = findViewById(R.id.status)
        status.setOnClickListener { toggleMaskResolution() }
        analysisThread.execute { loadModel() }
        if (ContextCompat.checkSelfPermission(this, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED) {
            startCamera()
        } else {
            permission.launch(Manifest.permission.CAMERA)
        }
    }

    /** On the analysis thread: read the model file's metadata and build the interpreter (GPU -> NNAPI -> CPU). */
    private fun loadModel() {
        try {
            val (bytes, where) = Segmenter.findModel(this)
            val s = Segmenter.create(this, bytes, where)
            val info = s.model.info
            colors = info.colors()
            segmenter = s
            val sb = StringBuilder()
            sb.append("${info.configName} ${info.inputHeight}x${info.inputWidth} ")
            sb.append("${info.conversion["quantization"] ?: ""} on ${s.engine.backend.label}\n")
            sb.append("init %.0f ms, first run %.0f ms\n".format(s.engine.initMs, s.engine.firstRunMs))
            for (f in s.engine.fallbacks) sb.append("fallback from ${f.backend.label}: ${f.reason}\n")
            header = sb.toString()
            Log.i(TAG, header)
        } catch (e: Throwable) {
            Log.e(TAG, "model loading failed", e)
            loadError = e.message ?: e.toString()
        }
        runOnUiThread { status.text = loadError?.let { "Model not loaded: $it" } ?: header }
    }

    /** Switch the merge between "grid" and "full" on the analysis thread (the one that decodes). */
    private fun toggleMaskResolution() {
        analysisThread.execute {
            val s = segmenter ?: return@execute
            s.maskResolution = if (s.maskResolution == "full") Segmenter.LIVE_MASK_RESOLUTION else "full"
            Log.i(TAG, "mask resolution: ${s.maskResolution}")
        }
    }

    private fun startCamera() {
        val future = ProcessCameraProvider.getInstance(this)
        future.addListener(Runnable {
            val provider = future.get()
            val selector4by3 = ResolutionSelector.Builder()
                .setAspectRatioStrategy(AspectRatioStrategy.RATIO_4_3_FALLBACK_AUTO_STRATEGY)
                .build()
            val preview = Preview.Builder().setResolutionSelector(selector4by3).build()
            preview.setSurfaceProvider(previewView.surfaceProvider)
            val analysisSelector = ResolutionSelector.Builder()
                .setAspectRatioStrategy(AspectRatioStrategy.RATIO_4_3_FALLBACK_AUTO_STRATEGY)
                .setResolutionStrategy(
                    ResolutionStrategy(Size(640, 480), ResolutionStrategy.FALLBACK_RULE_CLOSEST_HIGHER_THEN_LOWER)
                )
                .build()
            val analysis = ImageAnalysis.Builder()
                .setResolutionSelector(analysisSelector)
                .setBackpressureStrategy(ImageAnalysis.STRATEGY_KEEP_ONLY_LATEST)
                .setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_RGBA_8888)
                .build()
            analysis.setAnalyzer(analysisThread, ImageAnalysis.Analyzer { image -> analyze(image) })
            provider.unbindAll()
            provider.bindToLifecycle(this, CameraSelector.DEFAULT_BACK_CAMERA, preview, analysis)
            Unit
        }, ContextCompat.getMainExecutor(this))
    }

    private fun analyze(image: ImageProxy) {
        try {
            val s = segmenter ?: return
            converter.convert(image)
            // masks at most OVERLAY_MAX on the long side: enough for an overlay, cheaper to merge
            val h = converter.height
            val w = converter.width
            val k = maxOf(1, (maxOf(h, w) + OVERLAY_MAX - 1) / OVERLAY_MAX)
            val r = try {
                s.process(converter.rgb, h, w, h / k, w / k)
            } catch (e: Exception) {
                Log.e(TAG, "frame failed", e)
                val text = "$header\nframe failed: ${e.message}"
                runOnUiThread { status.text = text }
                return
            }
            val now = SystemClock.elapsedRealtimeNanos()
            stats.add(r, now)
            overlay.show(r.result, colors, s.model.labels)
            if (now - lastStatus > 500_000_000L) {
                lastStatus = now
                val text = "$header${stats.summary(now)} | ${r.result.numSegments} segments | ${s.maskResolution} merge"
                runOnUiThread { status.text = text }
            }
        } finally {
            image.close()  // hands the buffer back to CameraX: the next (latest) frame can come
        }
    }

    override fun onDestroy() {
        super.onDestroy()
        analysisThread.execute { segmenter?.close() }
        analysisThread.shutdown()
    }

    companion object {
        private const val TAG = "MaskConver"
        private const val OVERLAY_MAX = 320
    }
}
