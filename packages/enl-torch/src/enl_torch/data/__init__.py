"""Datasets for the detection training entry (:mod:`enl_torch.train`)."""

from enl_torch.data.coco import CocoDetection, collate, find_split

__all__ = ["CocoDetection", "collate", "find_split"]
