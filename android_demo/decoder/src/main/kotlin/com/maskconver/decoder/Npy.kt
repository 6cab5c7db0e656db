package com.maskconver.decoder

import java.io.ByteArrayOutputStream
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.util.zip.Inflater

/** A file of the model (or of a test fixture) is not what it should be; the message names the fix. */
class ModelFileException(message: String) : RuntimeException(message)

/**
 * One NumPy array read from a `.npy` file: [shape] (row-major, C order), [dtype] as NumPy's descr without
 * the byte-order mark (`f4`, `f8`, `i1`, `u1`, `i4`, `i8`, `b1`), and the raw little-endian [data].
 */
class NpyArray(val dtype: String, val shape: IntArray, val data: ByteArray) {
    val size: Int get() = shape.fold(1) { a, b -> a * b }

    private fun buf(): ByteBuffer = ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN)

    private fun need(vararg kinds: String) {
        if (dtype !in kinds) {
            throw ModelFileException("array has dtype $dtype, expected one of ${kinds.joinToString()}")
        }
    }

    /** float32 values (float64 arrays are rounded to float32). */
    fun floats(): FloatArray {
        need("f4", "f8")
        val out = FloatArray(size)
        val b = buf()
        if (dtype == "f4") b.asFloatBuffer().get(out) else for (i in out.indices) out[i] = b.getDouble(i * 8).toFloat()
        return out
    }

    /** Integer and boolean arrays as Int (int64 must fit). */
    fun ints(): IntArray {
        val out = IntArray(size)
        val b = buf()
        when (dtype) {
            "i4" -> b.asIntBuffer().get(out)
            "i8" -> for (i in out.indices) out[i] = Math.toIntExact(b.getLong(i * 8))
            "i1" -> for (i in out.indices) out[i] = data[i].toInt()
            "u1", "b1" -> for (i in out.indices) out[i] = data[i].toInt() and 0xFF
            "u2" -> for (i in out.indices) out[i] = b.getShort(i * 2).toInt() and 0xFFFF
            "i2" -> for (i in out.indices) out[i] = b.getShort(i * 2).toInt()
            else -> throw ModelFileException("array has dtype $dtype, expected an integer or boolean type")
        }
        return out
    }

    /** int64 values (any integer dtype). */
    fun longs(): LongArray {
        if (dtype == "i8") {
            val out = LongArray(size)
            buf().asLongBuffer().get(out)
            return out
        }
        val ints = ints()
        return LongArray(ints.size) { ints[it].toLong() }
    }

    /** The raw bytes of an int8 / uint8 array. */
    fun bytes(): ByteArray {
        need("i1", "u1", "b1")
        return data
    }

    fun scalarDouble(): Double = when (dtype) {
        "f4" -> buf().getFloat(0).toDouble()
        "f8" -> buf().getDouble(0)
        else -> ints()[0].toDouble()
    }

    companion object {
        private val MAGIC = byteArrayOf(0x93.toByte(), 'N'.toByte(), 'U'.toByte(), 'M'.toByte(), 'P'.toByte(), 'Y'.toByte())
        private val ITEM_SIZE = mapOf("f4" to 4, "f8" to 8, "i1" to 1, "u1" to 1, "b1" to 1, "i2" to 2, "u2" to 2, "i4" to 4, "i8" to 8)

        /** Parse the bytes of a `.npy` file (format versions 1-3, little-endian, C order, no pickles). */
        fun parse(bytes: ByteArray, name: String = "array"): NpyArray {
            if (bytes.size < 10 || !(0 until 6).all { bytes[it] == MAGIC[it] }) {
                throw ModelFileException("$name is not a .npy array (bad magic); re-export it with numpy.save")
            }
            val major = bytes[6].toInt()
            val b = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN)
            val headerLen: Int
            val start: Int
            if (major == 1) {
                headerLen = b.getShort(8).toInt() and 0xFFFF
                start = 10
            } else {
                headerLen = b.getInt(8)
                start = 12
            }
            if (start + headerLen > bytes.size) throw ModelFileException("$name: truncated .npy header")
            val header = String(bytes, start, headerLen, Charsets.ISO_8859_1)
            val descr = Regex("'descr'\\s*:\\s*'([^']*)'").find(header)?.groupValues?.get(1)
                ?: throw ModelFileException("$name: .npy header lacks 'descr': $header")
            if (Regex("'fortran_order'\\s*:\\s*True").containsMatchIn(header)) {
                throw ModelFileException("$name is stored in Fortran order; save it with np.ascontiguousarray")
            }
            val shapeText = Regex("'shape'\\s*:\\s*\\(([^)]*)\\)").find(header)?.groupValues?.get(1)
                ?: throw ModelFileException("$name: .npy header lacks 'shape': $header")
            val shape = shapeText.split(',').map { it.trim() }.filter { it.isNotEmpty() }.map { it.toInt() }.toIntArray()
            val order = descr[0]
            val kind = if (order == '<' || order == '|' || order == '=') descr.substring(1) else descr
            if (order == '>' && kind != "i1" && kind != "u1" && kind != "b1") {
                throw ModelFileException("$name is big-endian ($descr); save it little-endian")
            }
            val item = ITEM_SIZE[kind] ?: throw ModelFileException("$name has unsupported dtype $descr")
            val count = shape.fold(1L) { a, s -> a * s }
            val dataStart = start + headerLen
            if (dataStart + count * item > bytes.size) {
                throw ModelFileException("$name: .npy data truncated (${bytes.size - dataStart} bytes for $count x $item)")
            }
            val data = bytes.copyOfRange(dataStart, dataStart + (count * item).toInt())
            return NpyArray(kind, shape, data)
        }

        /** `.npy` bytes (format 1.0) of [data] (little-endian raw values of [dtype]) with [shape]. */
        fun encode(dtype: String, shape: IntArray, data: ByteArray): ByteArray {
            val shapeText = when (shape.size) {
                0 -> "()"
                1 -> "(${shape[0]},)"
                else -> shape.joinToString(", ", "(", ")")
            }
            val descr = if (ITEM_SIZE[dtype] == 1) "|$dtype" else "<$dtype"
            var header = "{'descr': '$descr', 'fortran_order': False, 'shape': $shapeText, }"
            val total = 10 + header.length + 1
            header += " ".repeat((64 - total % 64) % 64) + "\n"
            val out = ByteArrayOutputStream()
            out.write(MAGIC)
            out.write(1)
            out.write(0)
            out.write(header.length and 0xFF)
            out.write(header.length shr 8)
            out.write(header.toByteArray(Charsets.ISO_8859_1))
            out.write(data)
            return out.toByteArray()
        }

        fun ofFloats(shape: IntArray, values: FloatArray): ByteArray {
            val b = ByteBuffer.allocate(values.size * 4).order(ByteOrder.LITTLE_ENDIAN)
            b.asFloatBuffer().put(values)
            return encode("f4", shape, b.array())
        }

        fun ofInts(shape: IntArray, values: IntArray): ByteArray {
            val b = ByteBuffer.allocate(values.size * 4).order(ByteOrder.LITTLE_ENDIAN)
            b.asIntBuffer().put(values)
            return encode("i4", shape, b.array())
        }

        fun ofLongs(shape: IntArray, values: LongArray): ByteArray {
            val b = ByteBuffer.allocate(values.size * 8).order(ByteOrder.LITTLE_ENDIAN)
            b.asLongBuffer().put(values)
            return encode("i8", shape, b.array())
        }
    }
}

/**
 * Minimal zip reader over a byte array, for `.npz` files and the associated files zipped onto the end of a
 * `.tflite` model. It reads the central directory (found from the end-of-central-directory record), so bytes
 * before the zip (the flatbuffer) are skipped, whether the entry offsets count from the file start or from
 * the zip start. STORED and DEFLATED entries; zip64 sizes and offsets.
 */
object ZipBytes {
    private const val EOCD = 0x06054b50
    private const val CEN = 0x02014b50
    private const val LOC = 0x04034b50

    fun entries(bytes: ByteArray, what: String = "zip"): Map<String, ByteArray> {
        val b = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN)
        var eocd = -1
        var i = bytes.size - 22
        val stop = maxOf(0, bytes.size - 22 - 65535)
        while (i >= stop) {
            if (b.getInt(i) == EOCD) {
                eocd = i
                break
            }
            i--
        }
        // The record must close the file (a zip stored inside, like mask_head.npz, has one of its own earlier on).
        if (eocd >= 0 && eocd + 22 + (b.getShort(eocd + 20).toInt() and 0xFFFF) != bytes.size) eocd = -1
        if (eocd < 0) {
            throw ModelFileException("$what: no zip found at the end (end-of-central-directory missing; truncated file?)")
        }
        var count = b.getShort(eocd + 10).toInt() and 0xFFFF
        var cdSize = b.getInt(eocd + 12).toLong() and 0xFFFFFFFFL
        var cdOffset = b.getInt(eocd + 16).toLong() and 0xFFFFFFFFL
        // zip64: locator just before the EOCD points to the zip64 EOCD record
        val loc64 = eocd - 20
        if (loc64 >= 0 && b.getInt(loc64) == 0x07064b50) {
            val rec = b.getLong(loc64 + 8).toInt()
            if (rec >= 0 && rec + 56 <= bytes.size && b.getInt(rec) == 0x06064b50) {
                count = b.getLong(rec + 32).toInt()
                cdSize = b.getLong(rec + 40)
                cdOffset = b.getLong(rec + 48)
            }
        }
        // Where the central directory really is: just before the EOCD (or the zip64 records).
        val cdEnd = if (loc64 >= 0 && b.getInt(loc64) == 0x07064b50) loc64 - 56 else eocd
        val cdStart = (cdEnd - cdSize).toInt()
        if (cdStart < 0 || b.getInt(cdStart) != CEN && count > 0) {
            throw ModelFileException("$what: zip central directory is damaged; the file may be truncated")
        }
        val delta = cdStart - cdOffset  // 0 when offsets count from the file start
        val out = LinkedHashMap<String, ByteArray>()
        var p = cdStart
        for (e in 0 until count) {
            if (b.getInt(p) != CEN) throw ModelFileException("$what: zip central directory entry $e is damaged")
            val method = b.getShort(p + 10).toInt() and 0xFFFF
            var csize = b.getInt(p + 20).toLong() and 0xFFFFFFFFL
            var usize = b.getInt(p + 24).toLong() and 0xFFFFFFFFL
            val nameLen = b.getShort(p + 28).toInt() and 0xFFFF
            val extraLen = b.getShort(p + 30).toInt() and 0xFFFF
            val commentLen = b.getShort(p + 32).toInt() and 0xFFFF
            var localOffset = b.getInt(p + 42).toLong() and 0xFFFFFFFFL
            val name = String(bytes, p + 46, nameLen, Charsets.UTF_8)
            var x = p + 46 + nameLen
            val xEnd = x + extraLen
            while (x + 4 <= xEnd) {
                val id = b.getShort(x).toInt() and 0xFFFF
                val len = b.getShort(x + 2).toInt() and 0xFFFF
                if (id == 1) {  // zip64 extended information, fields present only where the 32-bit one is 0xFFFFFFFF
                    var q = x + 4
                    if (usize == 0xFFFFFFFFL) { usize = b.getLong(q); q += 8 }
                    if (csize == 0xFFFFFFFFL) { csize = b.getLong(q); q += 8 }
                    if (localOffset == 0xFFFFFFFFL) { localOffset = b.getLong(q) }
                }
                x += 4 + len
            }
            val lh = (localOffset + delta).toInt()
            if (lh < 0 || lh + 30 > bytes.size || b.getInt(lh) != LOC) {
                throw ModelFileException("$what: zip entry $name points outside the file; the file may be truncated")
            }
            val start = lh + 30 + (b.getShort(lh + 26).toInt() and 0xFFFF) + (b.getShort(lh + 28).toInt() and 0xFFFF)
            if (start + csize > bytes.size) throw ModelFileException("$what: zip entry $name is truncated")
            out[name] = when (method) {
                0 -> bytes.copyOfRange(start, start + csize.toInt())
                8 -> inflate(bytes, start, csize.toInt(), usize.toInt(), name, what)
                else -> throw ModelFileException("$what: zip entry $name uses compression method $method (only stored/deflate)")
            }
            p = xEnd + commentLen
        }
        return out
    }

    private fun inflate(bytes: ByteArray, start: Int, csize: Int, usize: Int, name: String, what: String): ByteArray {
        val inf = Inflater(true)
        try {
            inf.setInput(bytes, start, csize)
            val out = ByteArray(usize)
            var n = 0
            while (n < usize) {
                val got = inf.inflate(out, n, usize - n)
                if (got == 0 && (inf.finished() || inf.needsInput())) break
                n += got
            }
            if (n != usize) throw ModelFileException("$what: zip entry $name inflates to $n bytes, expected $usize")
            return out
        } finally {
            inf.end()
        }
    }
}

/** `.npz` (a zip of `.npy`) reader and writer. Keys are the entry names without `.npy`. */
object Npz {
    fun parse(bytes: ByteArray, what: String = "npz"): Map<String, NpyArray> {
        val out = LinkedHashMap<String, NpyArray>()
        for ((name, data) in ZipBytes.entries(bytes, what)) {
            out[name.removeSuffix(".npy")] = NpyArray.parse(data, "$what/$name")
        }
        return out
    }

    fun read(file: File): Map<String, NpyArray> = parse(file.readBytes(), file.path)

    /** Write an uncompressed `.npz` of already encoded `.npy` bytes, atomically (temp file + rename). */
    fun write(file: File, arrays: Map<String, ByteArray>) {
        val tmp = File(file.path + ".part")
        java.util.zip.ZipOutputStream(tmp.outputStream()).use { z ->
            for ((key, npy) in arrays) {
                val e = java.util.zip.ZipEntry("$key.npy")
                e.method = java.util.zip.ZipEntry.STORED
                e.size = npy.size.toLong()
                e.compressedSize = npy.size.toLong()
                val crc = java.util.zip.CRC32()
                crc.update(npy)
                e.crc = crc.value
                z.putNextEntry(e)
                z.write(npy)
                z.closeEntry()
            }
        }
        if (!tmp.renameTo(file)) {
            file.delete()
            if (!tmp.renameTo(file)) throw java.io.IOException("cannot rename $tmp to $file")
        }
    }
}
