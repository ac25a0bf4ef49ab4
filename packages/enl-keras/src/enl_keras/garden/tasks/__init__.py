"""Task registrations (Model Garden's Mask R-CNN task for the ENL configs)."""
