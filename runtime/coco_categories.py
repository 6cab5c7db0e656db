"""The COCO panoptic category table: 133 classes (80 things, 53 stuff) on the raw ids 0..200.

MaskConver's heatmap has one channel per raw COCO panoptic id (201 channels, id 0 = void), so the runtime
needs a :class:`~maskconver.runtime.model_info.Category` for every id, including the 68 ids COCO never uses.
Names, ids, the thing/stuff split and the display colours are those of the COCO panoptic 2017 release
(``panoptic_coco_categories.json`` of panopticapi). Unused ids get a generated colour distinct from all others and
the name ``unused_<id>``. Model Garden treats every id in 1..90 as a thing (``is_thing = [F] + [T]*90 +
[F]*110``), so unused ids in 1..90 are marked ``isthing=True`` and those above 90 ``isthing=False``; ids that
never occur in the data can then never disagree with the model's own thing test.
"""

from __future__ import annotations

import colorsys

from maskconver.runtime.model_info import Category

VOID_ID = 0
NUM_COCO_PANOPTIC_CLASSES = 201  # heatmap channels of the Model Garden configs (ids 0..200)
MAX_THING_ID = 90  # Model Garden: things are ids 1..90

# (id, name, (R, G, B)) of the 80 thing classes.
_THINGS: tuple[tuple[int, str, tuple[int, int, int]], ...] = (
    (1, "person", (220, 20, 60)),
    (2, "bicycle", (119, 11, 32)),
    (3, "car", (0, 0, 142)),
    (4, "motorcycle", (0, 0, 230)),
    (5, "airplane", (106, 0, 228)),
    (6, "bus", (0, 60, 100)),
    (7, "train", (0, 80, 100)),
    (8, "truck", (0, 0, 70)),
    (9, "boat", (0, 0, 192)),
    (10, "traffic light", (250, 170, 30)),
    (11, "fire hydrant", (100, 170, 30)),
    (13, "stop sign", (220, 220, 0)),
    (14, "parking meter", (175, 116, 175)),
    (15, "bench", (250, 0, 30)),
    (16, "bird", (165, 42, 42)),
    (17, "cat", (255, 77, 255)),
    (18, "dog", (0, 226, 252)),
    (19, "horse", (182, 182, 255)),
    (20, "sheep", (0, 82, 0)),
    (21, "cow", (120, 166, 157)),
    (22, "elephant", (110, 76, 0)),
    (23, "bear", (174, 57, 255)),
    (24, "zebra", (199, 100, 0)),
    (25, "giraffe", (72, 0, 118)),
    (27, "backpack", (255, 179, 240)),
    (28, "umbrella", (0, 125, 92)),
    (31, "handbag", (209, 0, 151)),
    (32, "tie", (188, 208, 182)),
    (33, "suitcase", (0, 220, 176)),
    (34, "frisbee", (255, 99, 164)),
    (35, "skis", (92, 0, 73)),
    (36, "snowboard", (133, 129, 255)),
    (37, "sports ball", (78, 180, 255)),
    (38, "kite", (0, 228, 0)),
    (39, "baseball bat", (174, 255, 243)),
    (40, "baseball glove", (45, 89, 255)),
    (41, "skateboard", (134, 134, 103)),
    (42, "surfboard", (145, 148, 174)),
    (43, "tennis racket", (255, 208, 186)),
    (44, "bottle", (197, 226, 255)),
    (46, "wine glass", (171, 134, 1)),
    (47, "cup", (109, 63, 54)),
    (48, "fork", (207, 138, 255)),
    (49, "knife", (151, 0, 95)),
    (50, "spoon", (9, 80, 61)),
    (51, "bowl", (84, 105, 51)),
    (52, "banana", (74, 65, 105)),
    (53, "apple", (166, 196, 102)),
    (54, "sandwich", (208, 195, 210)),
    (55, "orange", (255, 109, 65)),
    (56, "broccoli", (0, 143, 149)),
    (57, "carrot", (179, 0, 194)),
    (58, "hot dog", (209, 99, 106)),
    (59, "pizza", (5, 121, 0)),
    (60, "donut", (227, 255, 205)),
    (61, "cake", (147, 186, 208)),
    (62, "chair", (153, 69, 1)),
    (63, "couch", (3, 95, 161)),
    (64, "potted plant", (163, 255, 0)),
    (65, "bed", (119, 0, 170)),
    (67, "dining table", (0, 182, 199)),
    (70, "toilet", (0, 165, 120)),
    (72, "tv", (183, 130, 88)),
    (73, "laptop", (95, 32, 0)),
    (74, "mouse", (130, 114, 135)),
    (75, "remote", (110, 129, 133)),
    (76, "keyboard", (166, 74, 118)),
    (77, "cell phone", (219, 142, 185)),
    (78, "microwave", (79, 210, 114)),
    (79, "oven", (178, 90, 62)),
    (80, "toaster", (65, 70, 15)),
    (81, "sink", (127, 167, 115)),
    (82, "refrigerator", (59, 105, 106)),
    (84, "book", (142, 108, 45)),
    (85, "clock", (196, 172, 0)),
    (86, "vase", (95, 54, 80)),
    (87, "scissors", (128, 76, 255)),
    (88, "teddy bear", (201, 57, 1)),
    (89, "hair drier", (246, 0, 122)),
    (90, "toothbrush", (191, 162, 208)),
)

# (id, name, (R, G, B)) of the 53 stuff classes ("-merged" classes merge several COCO-stuff labels).
_STUFF: tuple[tuple[int, str, tuple[int, int, int]], ...] = (
    (92, "banner", (255, 255, 128)),
    (93, "blanket", (147, 211, 203)),
    (95, "bridge", (150, 100, 100)),
    (100, "cardboard", (168, 171, 172)),
    (107, "counter", (146, 112, 198)),
    (109, "curtain", (210, 170, 100)),
    (112, "door-stuff", (92, 136, 89)),
    (118, "floor-wood", (218, 88, 184)),
    (119, "flower", (241, 129, 0)),
    (122, "fruit", (217, 17, 255)),
    (125, "gravel", (124, 74, 181)),
    (128, "house", (70, 70, 70)),
    (130, "light", (255, 228, 255)),
    (133, "mirror-stuff", (154, 208, 0)),
    (138, "net", (193, 0, 92)),
    (141, "pillow", (76, 91, 113)),
    (144, "platform", (255, 180, 195)),
    (145, "playingfield", (106, 154, 176)),
    (147, "railroad", (230, 150, 140)),
    (148, "river", (60, 143, 255)),
    (149, "road", (128, 64, 128)),
    (151, "roof", (92, 82, 55)),
    (154, "sand", (254, 212, 124)),
    (155, "sea", (73, 77, 174)),
    (156, "shelf", (255, 160, 98)),
    (159, "snow", (255, 255, 255)),
    (161, "stairs", (104, 84, 109)),
    (166, "tent", (169, 164, 131)),
    (168, "towel", (225, 199, 255)),
    (171, "wall-brick", (137, 54, 74)),
    (175, "wall-stone", (135, 158, 223)),
    (176, "wall-tile", (7, 246, 231)),
    (177, "wall-wood", (107, 255, 200)),
    (178, "water-other", (58, 41, 149)),
    (180, "window-blind", (183, 121, 142)),
    (181, "window-other", (255, 73, 97)),
    (184, "tree-merged", (107, 142, 35)),
    (185, "fence-merged", (190, 153, 153)),
    (186, "ceiling-merged", (146, 139, 141)),
    (187, "sky-other-merged", (70, 130, 180)),
    (188, "cabinet-merged", (134, 199, 156)),
    (189, "table-merged", (209, 226, 140)),
    (190, "floor-other-merged", (96, 36, 108)),
    (191, "pavement-merged", (96, 96, 96)),
    (192, "mountain-merged", (64, 170, 64)),
    (193, "grass-merged", (152, 251, 152)),
    (194, "dirt-merged", (208, 229, 228)),
    (195, "paper-merged", (206, 186, 171)),
    (196, "food-other-merged", (152, 161, 64)),
    (197, "building-other-merged", (116, 112, 0)),
    (198, "rock-merged", (0, 114, 143)),
    (199, "wall-other-merged", (102, 102, 156)),
    (200, "rug-merged", (250, 141, 255)),
)

VOID_COLOR = (0, 0, 0)


def distinct_colours(count: int, taken: set[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """``count`` distinct, deterministic colours (golden-angle hues) that avoid every colour in ``taken``."""
    out: list[tuple[int, int, int]] = []
    k = 0
    while len(out) < count:
        hue = (k * 0.618033988749895) % 1.0
        sat = 0.35 + 0.5 * ((k * 0.379) % 1.0)
        val = 0.45 + 0.5 * ((k * 0.713) % 1.0)
        rgb = tuple(int(round(255 * v)) for v in colorsys.hsv_to_rgb(hue, sat, val))
        k += 1
        if rgb not in taken:
            taken.add(rgb)
            out.append(rgb)  # type: ignore[arg-type]
    return out


def coco_panoptic_categories(num_classes: int = NUM_COCO_PANOPTIC_CLASSES) -> list[Category]:
    """One :class:`Category` per id ``0..num_classes-1`` (index == id), COCO panoptic 2017 naming.

    Id 0 is ``void`` (stuff, black); ids COCO does not use are ``unused_<id>``. ``num_classes`` must be at
    least 201 to hold every COCO panoptic id (the Model Garden configs use exactly 201).
    """
    if num_classes < NUM_COCO_PANOPTIC_CLASSES:
        raise ValueError(
            f"num_classes={num_classes} cannot hold the COCO panoptic ids 0..200; use num_classes >= 201 "
            "(the Model Garden configs use 201)"
        )
    known = {cid: (name, colour, True) for cid, name, colour in _THINGS}
    known.update({cid: (name, colour, False) for cid, name, colour in _STUFF})
    taken = {colour for _, colour, _ in known.values()} | {VOID_COLOR}
    unused_ids = [i for i in range(1, num_classes) if i not in known]
    spare = dict(zip(unused_ids, distinct_colours(len(unused_ids), taken), strict=True))
    out = [Category(VOID_ID, "void", False, VOID_COLOR)]
    for i in range(1, num_classes):
        if i in known:
            name, colour, isthing = known[i]
            out.append(Category(i, name, isthing, colour))
        else:
            out.append(Category(i, f"unused_{i}", i <= MAX_THING_ID, spare[i]))
    return out


def coco_panoptic_json_categories() -> list[dict]:
    """The 133 real COCO panoptic categories as COCO JSON dicts (``id``, ``name``, ``isthing``, ``color``)."""
    rows = [(cid, name, colour, 1) for cid, name, colour in _THINGS]
    rows += [(cid, name, colour, 0) for cid, name, colour in _STUFF]
    return [{"id": c, "name": n, "isthing": t, "color": list(col)} for c, n, col, t in rows]
