"""maskconver.runtime"""
