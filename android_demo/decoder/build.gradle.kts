// Plain Kotlin/JVM module: no Android dependencies. The app uses it as is; its tests are a main() runner
// (src/test/kotlin/.../DecoderTests.kt) over the golden cases in src/test/resources/golden, also runnable
// without Gradle through run_tests.sh (kotlinc).
plugins {
    id("org.jetbrains.kotlin.jvm")
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    // org.json is part of the Android platform; on the JVM (tests) it comes from Maven.
    compileOnly("org.json:json:20231013")
    testImplementation("org.json:json:20231013")
}

val goldenTest by tasks.registering(JavaExec::class) {
    description = "Runs the decoder against the Python runtime's golden outputs."
    group = "verification"
    classpath = sourceSets["test"].runtimeClasspath
    mainClass.set("com.maskconver.decoder.DecoderTestsKt")
    args(file("src/test/resources/golden").path)
}

tasks.named("test") {
    dependsOn(goldenTest)
}
