"""Stage 2, *show*: class-conditional feature visualisation (CLIP-Illusion), masks, exemplars, heatmaps.

The entry point is :func:`neuroinspect.show.visualize.visualize_neurons`.
"""
