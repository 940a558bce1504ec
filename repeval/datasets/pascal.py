"""PASCAL-Context for multi-task learning (the "PASCAL_MT" archive of Maninis et al.'s ASTMT, read
the same way by Vandenhende et al.'s MTL code; the DGR paper's Table 4(c)). Under DATA_DIR:

    JPEGImages/ID.jpg                       the images
    ImageSets/Context/{train,val}.txt       one ID per line (4,998 train, 5,105 val)
    semseg/VOC12/ID.png                     21 classes (0 background, 1-20 VOC), 255 = ignore;
                                            else semseg/pascal-context/ID.png
    human_parts/ID.mat                      Pascal-Part `anno`: objects with a class index (person
                                            = 15) and named part masks; parts grouped into 6
                                            classes (head, torso, upper/lower arms, upper/lower
                                            legs) + background; images without a person: all ignore
    sal_distill/ID.png                      grey, salient where > 0.5 * 255
    normals_distill/ID.png                  RGB, n = 2 v / 255 - 1
    pascal-context/trainval/ID.mat          `LabelMap`, the 459-class context labels: the edges
                                            (pixels where its Laplacian is non-zero, thinned with
                                            scikit-image's `thin`, as the reference) and the
                                            normals' mask

The reference keeps normals only on pixels of the context classes that NYU's normals cover (a
class list it ships as json); repeval does not ship that list: `normal_classes` takes it
("1,5,17"), and by default every labelled pixel (LabelMap > 0) keeps its normal. Every map is
resized to `size` x `size` (image bilinear, targets nearest: the reference's FixedResize to
512 x 512); training samples are flipped at random (normals' x negated). The reference's random
scale-and-rotate is not applied. ImageNet mean and std."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from repeval.datasets.base import IMAGENET_MEAN, IMAGENET_STD, DatasetBundle, InputSpec
from repeval.datasets.dense import Augmentation, DenseDataset
from repeval.datasets.files import MAX_IMAGE_SIDE, class_map, read_image, read_mat
from repeval.errors import DataError, DataNotFoundError, InvalidChoiceError, check_bool, check_fixed_split, check_number
from repeval.validation import parse_int_list
from repeval.tasks import TaskSpec

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
PARTS = ("background", "head", "torso", "upper_arm", "lower_arm", "upper_leg", "lower_leg")
PERSON = 15
# Pascal-Part's person part names -> the 6 part classes (the reference's grouping).
PART_CLASS = {
    **dict.fromkeys(("hair", "head", "lear", "lebrow", "leye", "mouth", "nose", "rear", "rebrow", "reye"), 1),
    "neck": 2, "torso": 2, "luarm": 3, "ruarm": 3,
    **dict.fromkeys(("llarm", "rlarm", "lhand", "rhand"), 4), "luleg": 5, "ruleg": 5,
    **dict.fromkeys(("llleg", "rlleg", "lfoot", "rfoot"), 6),
}
TASKS = (
    TaskSpec("seg", len(VOC_CLASSES), VOC_CLASSES, kind="segmentation"),
    TaskSpec("parts", len(PARTS), PARTS, kind="segmentation"),
    TaskSpec("saliency", 1, kind="saliency"),
    TaskSpec("normal", 3, kind="normals", options=(("loss", "l1"),)),
    TaskSpec("edges", 1, kind="edges"),
)
LAYOUT = ("PASCAL_MT's layout: JPEGImages/ID.jpg, ImageSets/Context/{train,val}.txt, semseg/VOC12/ID.png, "
          "human_parts/ID.mat, sal_distill/ID.png, normals_distill/ID.png, pascal-context/trainval/ID.mat")


def part_labels(mat_path: Path, shape: tuple[int, int]) -> np.ndarray:
    """The 7-class part map of a Pascal-Part annotation; all -1 (ignore) without a person."""
    out = np.full(shape, -1, dtype=np.int64)
    if not mat_path.is_file():
        return out
    anno = read_mat(mat_path, "anno", squeeze_me=True, struct_as_record=False)
    try:
        people = [o for o in np.atleast_1d(anno.objects) if int(o.class_ind) == PERSON]
        if people:
            out[:] = 0
        for person in people:
            for part in np.atleast_1d(person.parts) if np.size(person.parts) else []:
                mask = np.asarray(part.mask) > 0
                if mask.shape != shape:
                    raise DataError(f"{str(mat_path)!r}: a part mask of shape {list(mask.shape)}; the image is {list(shape)}")
                out[mask] = PART_CLASS.get(str(part.part_name), 0)
    except (AttributeError, TypeError, ValueError) as e:
        raise DataError(f"{str(mat_path)!r} is not a Pascal-Part annotation ({e})") from None
    return out


def context_edges(label_map: np.ndarray) -> np.ndarray:
    """Thin boundaries of the context labels: where their Laplacian is non-zero, thinned."""
    from scipy.ndimage import laplace

    try:
        from skimage.morphology import thin
    except ImportError:
        raise InvalidChoiceError("pascal's edges are thinned with scikit-image: pip install 'repeval[pascal]'") from None
    return thin(laplace(label_map.astype(np.float64)) != 0).astype(np.float32)


class PascalSource:
    """One split, read per sample: image and the five targets at `size` x `size`."""

    def __init__(self, root: Path, split: str, size: int, normal_classes: tuple[int, ...] | None):
        self.root, self.size, self.normal_classes = root, size, normal_classes
        listing = root / "ImageSets" / "Context" / f"{split}.txt"
        if not listing.is_file():
            raise DataNotFoundError(f"{str(listing)!r} does not exist; expected {LAYOUT}")
        self.ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        if not self.ids:
            raise DataNotFoundError(f"{str(listing)!r} lists no image")

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def _existing(path: Path) -> None:
        if not path.is_file():
            raise DataNotFoundError(f"{str(path)!r} does not exist; expected {LAYOUT}")

    def _resized(self, array: np.ndarray, nearest: bool = True) -> np.ndarray:
        image = Image.fromarray(array)
        return np.array(image.resize((self.size, self.size), Image.NEAREST if nearest else Image.BILINEAR))

    def files(self, i: int) -> list[Path]:
        """The image's file, then each task's (the edges' are the context labels)."""
        name = self.ids[i]
        semseg = self.root / "semseg" / "VOC12" / f"{name}.png"
        if not semseg.is_file():
            semseg = self.root / "semseg" / "pascal-context" / f"{name}.png"
        context = self.root / "pascal-context" / "trainval" / f"{name}.mat"
        return [self.root / "JPEGImages" / f"{name}.jpg", semseg, self.root / "human_parts" / f"{name}.mat",
                self.root / "sal_distill" / f"{name}.png", self.root / "normals_distill" / f"{name}.png", context]

    def load(self, i: int) -> tuple[np.ndarray, list[np.ndarray]]:
        image_path, semseg_path, parts_path, sal_path, normal_path, context_path = self.files(i)
        for path in (image_path, semseg_path, sal_path, normal_path, context_path):
            self._existing(path)
        image = read_image(image_path, "RGB")
        shape = image.shape[:2]
        seg = class_map(read_image(semseg_path), semseg_path)
        seg[seg == 255] = -1
        parts = part_labels(parts_path, shape)
        sal = (read_image(sal_path, "L").astype(np.float32) / 255.0 > 0.5).astype(np.float32)
        normal = 2.0 * read_image(normal_path, "RGB").astype(np.float32) / 255.0 - 1.0
        label_map = np.asarray(read_mat(context_path, "LabelMap"))
        for path, array in ((semseg_path, seg), (sal_path, sal), (normal_path, normal), (context_path, label_map)):
            if array.shape[:2] != shape:
                raise DataError(f"{str(path)!r} is {list(array.shape[:2])}; its image is {list(shape)}")
        keep = label_map > 0 if self.normal_classes is None else np.isin(label_map, self.normal_classes)
        normal = normal * keep[..., None]
        edges = context_edges(label_map)
        targets = [
            self._resized(seg.astype(np.int32)).astype(np.int64),
            self._resized(parts.astype(np.int32)).astype(np.int64),
            self._resized(sal)[None],
            np.stack([self._resized(normal[..., c]) for c in range(3)]),
            self._resized(edges)[None],
        ]
        return self._resized(image, nearest=False).transpose(2, 0, 1).copy(), targets


def parse_classes(text: str) -> tuple[int, ...] | None:
    """`normal_classes`: "all" (None) or the context classes that keep their normals."""
    return None if text == "all" else parse_int_list(str(text), "--data-option normal_classes ('all' or)")


def check_args(data_dir, split_seed: int, size: int, augment: bool, normal_classes: str) -> None:
    if data_dir is None:
        raise DataNotFoundError(f"pascal needs --data-dir: the folder of {LAYOUT}")
    check_fixed_split("pascal", split_seed)
    check_number("Pascal", "size", size, kind=int, low=16, high=MAX_IMAGE_SIDE)
    check_bool("Pascal", "augment", augment)
    parse_classes(normal_classes)


def build_pascal(data_dir: str | None = None, split_seed: int = 0, size: int = 512, augment: bool = True,
                 normal_classes: str = "all") -> DatasetBundle:
    """PASCAL-Context's five tasks (seg 21 classes, human parts 7, saliency, normals, edges)."""
    check_args(data_dir, split_seed, size, augment, normal_classes)
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"pascal folder {str(root)!r} does not exist; expected {LAYOUT}")
    classes = parse_classes(normal_classes)
    train, test = (PascalSource(root, split, size, classes) for split in ("train", "val"))
    return DatasetBundle(  # each split reads its sample 0 now: a broken layout is refused before training
        name="pascal",
        args=dict(data_dir=str(root), split_seed=split_seed, size=size, augment=augment, normal_classes=normal_classes),
        train=DenseDataset(train, TASKS, Augmentation((1.0,)).for_size(size, size) if augment else None),
        test=DenseDataset(test, TASKS, None),
        tasks=TASKS,
        input=InputSpec(3, size, size, IMAGENET_MEAN, IMAGENET_STD),
        report={"train": len(train), "test": len(test)},
    )
