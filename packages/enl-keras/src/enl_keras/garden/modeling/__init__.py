"""Model Garden modeling parts: the ``enl_fpn`` decoder and the ``resnet_nl`` backbone."""
