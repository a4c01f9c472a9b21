"""Runs: typed settings, the per-batch step, output plug-ins, resume, the folder runner."""
