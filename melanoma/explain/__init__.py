"""Explanations: which regions of a dermoscopic image drove a probability.

`occlusion` greys out patches and measures the drop (the study's map); `incremental`, `folding`
and `graph` make that fast by recomputing only the windows a patch reaches; `gradcam` gives the
one-pass map; `render` colours either for display. Nothing here knows about Streamlit.
"""
