"""Decoders registered with Model Garden's decoder factory (``enl_fpn``)."""
