"""maskconver.converter"""
