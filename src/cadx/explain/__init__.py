"""Model explanation figures: t-SNE of embeddings, Grad-CAM heatmaps and overlays, first-layer filters and
feature maps. Figures use matplotlib ``Figure`` objects with the Agg canvas (no pyplot state) and atomic writes."""

from cadx.explain.filters import (
    feature_maps,
    feature_maps_figure,
    first_conv,
    first_layer_filters,
    first_layer_filters_figure,
)
from cadx.explain.gradcam import default_cam_layer, grad_cam, last_conv_layer, overlay_figure
from cadx.explain.tsne import default_perplexity, save_figure, tsne_embed, tsne_figure

__all__ = [
    "default_cam_layer", "default_perplexity", "feature_maps", "feature_maps_figure", "first_conv",
    "first_layer_filters", "first_layer_filters_figure", "grad_cam", "last_conv_layer", "overlay_figure",
    "save_figure", "tsne_embed", "tsne_figure",
]
