"""Config subclasses and registered experiments (``*_resnetfpn_{enl,nlbu,nltd}_coco``)."""
