"""The ELMD chain (paper Figure 4): six-part prompt, output parser, chain and the embedded default bundle."""
