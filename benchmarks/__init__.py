"""maskconver.benchmarks"""
