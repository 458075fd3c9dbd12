"""Example recipes shipped with video-pipeline (importable so `vre demo` can find them)."""
