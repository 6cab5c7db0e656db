"""maskconver.models"""
