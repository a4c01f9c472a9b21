"""Pictures from maps: colormaps and overlays, titled grids, animated GIFs, localisation boxes.
Arrays in, arrays (or bytes) out; no file I/O here (files go through ``io.writers``).
Images are RGB uint8 HWC unless a name says ``bgr``; maps are float32 in [0, 1]."""
