"""Images this package makes itself, not part of any stage: the demo's built-in benchmark
(``scenes``) and small stand-ins of the paper's datasets and a tiny CNN for smoke runs (``fakedata``)."""
