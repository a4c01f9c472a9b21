"""Pictures from maps: colormaps, overlays, JPEG encoding. Arrays in, arrays out."""
