"""Look inside a generator: seeds, truncation, interpolation, grids, videos and widgets.

    import sg3lib
    from sg3lib import explore as X
    G = X.load_generator('network.pt')                       # sg3lib snapshot or official .pkl
    X.generate(G, [0, 1, 2], psi=0.7)                        # PIL images, same as the official tools
    X.psi_grid(G, seeds=[0, 1], psis=[1, 0.7, 0.5, 0])       # rows seeds, columns psi
    X.style_mix_grid(G, [0, 1], [2, 3, 4], layers='coarse')
    X.interpolation_video(G, 'loop.mp4', kind='walk', grid=4, duration=8)
    from sg3lib.explore.widgets import LatentExplorer        # sliders (needs ipywidgets)

Widgets live in sg3lib.explore.widgets (not imported here, so scripts do not need ipywidgets);
videos need moviepy (imported when a video is written).
"""
from .latents import (seed_to_z, seeds_to_z, parse_seeds, class_labels, class_center, map_z, truncate,
                      lerp, slerp, interpolate, default_method, layer_ranges, layer_range, smooth_wrap, keyframe_path,
                      random_walk, circular_loop, style_mix_walk, make_transform, transform_sweep,
                      is_stylegan3)
from .generate import to_uint8, to_pil, to_rgb, synthesize, generate, generate_arrays, use_transform, load_generator, \
    tiny_generator
from .grids import image_grid, psi_grid, style_mix_grid
from .video import write_video, read_video_info, latent_path, interpolation_video, training_montage, VIDEO_KINDS
