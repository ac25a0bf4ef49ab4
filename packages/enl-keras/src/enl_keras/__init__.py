"""enl_keras: ENL and NonLocal for Keras 3 (under construction)."""
