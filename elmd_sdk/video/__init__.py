"""Video path (paper 3.4): frame sampling, frozen visual encoders, pooling (Eq. 6-8) and the projector (Eq. 9)."""
