"""netkit convert_annoset: images and their box annotations -> an LMDB of AnnotatedDatum
records, as SSD's tools/convert_annoset writes them (read by the AnnotatedData layer).

SSD's flags and argument order. LISTFILE holds one image a line with its annotation file
(--anno_type detection) or its integer label (classification), both paths relative to
ROOTFOLDER. Annotation files are PASCAL VOC XML (--label_type xml), SSD's COCO JSON (json)
or "label xmin ymin xmax ymax" lines (txt); boxes are stored normalised by the image size
the file gives (the image's own size where it gives none). Object names map to labels
through a LabelMap prototxt (item { name label display_name }). Keys are "%08d_<image
path>" by list position, as in SSD; the Datum keeps the image (BGR, CHW, uint8, or encoded)
with label -1 for detection.
"""
import collections
import json
import os
import random
import time
import xml.etree.ElementTree as ElementTree

import click

from ..data import shape_text
from ..data.image import opencv
from ..errors import NetkitError
from ..log import logger
from .convert_imageset import (GflagsCommand, db_options, decoding_threads, encoded_bytes,
                               file_extension, in_order, write_image_db)


def read_label_map(path, check_label=False):
    """LabelMap prototxt -> {name: label}. With `check_label` a name given twice is an
    error; otherwise the last item of a name wins, as in SSD's MapNameToLabel."""
    from google.protobuf import text_format

    from .. import netkit_pb2 as pb

    try:
        with open(path, encoding="utf-8") as f:
            label_map = text_format.Parse(f.read(), pb.LabelMap())
    except OSError as e:
        raise NetkitError("%s: cannot read the label map file: %s"
                          % (path, e.strerror or e)) from None
    except text_format.ParseError as e:
        raise NetkitError("%s:%s" % (path, e)) from None
    names = {}
    for item in label_map.item:
        if check_label and item.name in names:
            raise NetkitError("%s: the name '%s' is given more than once (--check_label)"
                              % (path, item.name))
        names[item.name] = item.label
    return names


def read_list(listfile, detection):
    """LISTFILE -> [(line number, image path, annotation path or int label)]: two fields a
    line, split at blanks (so paths hold no spaces, as in SSD); blank lines are skipped."""
    try:
        with open(listfile, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise NetkitError("%s: cannot read the list file: %s"
                          % (listfile, e.strerror or e)) from None
    entries = []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise NetkitError("%s:%d: expected 'image_path %s', got %d field(s)"
                              % (listfile, number, "annotation_path" if detection else "label",
                                 len(fields)))
        path, second = fields
        if not detection:
            try:
                second = int(second)
            except ValueError:
                raise NetkitError("%s:%d: label '%s' is not an integer (use --anno_type "
                                  "detection for annotation files)"
                                  % (listfile, number, second)) from None
        entries.append((number, path, second))
    return entries


class Annotations:
    """AnnotationGroups being filled: boxes join the group of their label (made on first
    use, in order of appearance) with the next instance_id of that group."""

    def __init__(self, anno_datum):
        self.anno_datum = anno_datum
        self.groups = {}

    def add(self, label):
        """A new Annotation of `label`, its instance_id set."""
        group = self.groups.get(label)
        if group is None:
            group = self.groups[label] = self.anno_datum.annotation_group.add(group_label=label)
        instance = group.annotation[-1].instance_id + 1 if len(group.annotation) else 0
        return group.annotation.add(instance_id=instance)


def _set_box(anno, box, width, height, difficult):
    """Store pixel box (xmin, ymin, xmax, ymax) normalised by width x height."""
    bbox = anno.bbox
    bbox.xmin, bbox.ymin = box[0] / width, box[1] / height
    bbox.xmax, bbox.ymax = box[2] / width, box[3] / height
    bbox.difficult = difficult


def _outside(box, width, height):
    return (min(box) < 0 or box[0] > width or box[2] > width or box[1] > height
            or box[3] > height or box[0] > box[2] or box[1] > box[3])


def _declared_size(labelfile, declared, image_size):
    """(height, width) an annotation file declares, or the image's when it declares none;
    a size unlike the image's is reported."""
    if declared is None:
        logger.warning("%s gives no image size; using the image's %dx%d", labelfile,
                       image_size[1], image_size[0])
        declared = image_size
    if declared != image_size:
        logger.warning("%s says the image is %dx%d but it is %dx%d", labelfile, declared[1],
                       declared[0], image_size[1], image_size[0])
    if not declared[0] or not declared[1]:
        raise NetkitError("%s: no valid image width/height" % labelfile)
    return declared


def read_xml(labelfile, image_size, names, annotations):
    """A PASCAL VOC annotation file into `annotations` (SSD's ReadXMLToAnnotatedDatum):
    each <object>'s children are read in order, <name> starting an annotation, <difficult>
    1 marking the boxes after it, <bndbox> giving integer pixel corners."""
    try:
        root = ElementTree.parse(labelfile).getroot()
    except ElementTree.ParseError as e:
        raise NetkitError("%s: not valid XML: %s" % (labelfile, e)) from None
    if root.tag != "annotation":
        raise NetkitError("%s: the root element is <%s>, not <annotation>"
                          % (labelfile, root.tag))
    try:
        declared = (int(root.findtext("size/height")), int(root.findtext("size/width")))
    except (TypeError, ValueError):
        declared = None
    height, width = _declared_size(labelfile, declared, image_size)
    outside = 0
    objects = [child for child in root if child.tag == "object"]
    for number, obj in enumerate(objects, 1):
        anno, difficult = None, False
        for child in obj:
            if child.tag == "name":
                name = (child.text or "").strip()
                if name not in names:
                    raise NetkitError("%s: object %d: unknown name '%s' (not in the label map)"
                                      % (labelfile, number, name))
                anno = annotations.add(names[name])
            elif child.tag == "difficult":
                difficult = (child.text or "").strip() == "1"
            elif child.tag == "bndbox":
                if anno is None:
                    raise NetkitError("%s: object %d: <bndbox> comes before <name>"
                                      % (labelfile, number))
                box = []
                for field in ("xmin", "ymin", "xmax", "ymax"):
                    text = child.findtext(field)
                    try:
                        box.append(0 if text is None else int(text))
                    except ValueError:
                        raise NetkitError("%s: object %d: bndbox/%s '%s' is not an integer"
                                          % (labelfile, number, field, text.strip())) from None
                outside += _outside(box, width, height)
                _set_box(anno, box, width, height, difficult)
    return outside


def read_json(labelfile, image_size, names, annotations):
    """SSD's COCO-style JSON (ReadJSONToAnnotatedDatum): image {height, width} and an
    annotation list of {category_id, iscrowd, bbox [x, y, width, height]}; category_id is
    looked up as a name, iscrowd marks the box difficult."""
    try:
        with open(labelfile, encoding="utf-8") as f:
            data = json.load(f)
    except ValueError as e:
        raise NetkitError("%s: not valid JSON: %s" % (labelfile, e)) from None
    image = data.get("image") if isinstance(data, dict) else None
    try:
        declared = (int(image["height"]), int(image["width"]))
    except (TypeError, KeyError, ValueError):
        declared = None
    height, width = _declared_size(labelfile, declared, image_size)
    objects = data.get("annotation") if isinstance(data, dict) else None
    if not isinstance(objects, list):
        raise NetkitError("%s: no 'annotation' list" % labelfile)
    outside = 0
    for number, obj in enumerate(objects, 1):
        try:
            name = obj["category_id"]
            x, y, w, h = (float(v) for v in obj["bbox"])
            iscrowd = int(obj.get("iscrowd", 0))
        except (TypeError, KeyError, ValueError):
            raise NetkitError("%s: annotation %d needs category_id and a bbox of 4 numbers"
                              % (labelfile, number)) from None
        name = str(name)
        if name not in names:
            raise NetkitError("%s: annotation %d: unknown category_id '%s' (not in the label "
                              "map)" % (labelfile, number, name))
        box = [x, y, x + w, y + h]
        outside += _outside(box, width, height)
        _set_box(annotations.add(names[name]), box, width, height, bool(iscrowd))
    return outside


def read_txt(labelfile, image_size, names, annotations):
    """Lines "label xmin ymin xmax ymax" (SSD's ReadTxtToAnnotatedDatum): integer labels
    as they are, pixel corners normalised by the image's size."""
    height, width = image_size
    outside = 0
    with open(labelfile, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) != 5:
                raise ValueError
            label, box = int(fields[0]), [float(v) for v in fields[1:]]
        except ValueError:
            raise NetkitError("%s:%d: expected 'label xmin ymin xmax ymax'"
                              % (labelfile, number)) from None
        outside += _outside(box, width, height)
        _set_box(annotations.add(label), box, width, height, False)
    return outside


READERS = {"xml": read_xml, "json": read_json, "txt": read_txt}


def read_image(cv2, filename, height, width, min_dim, max_dim, is_color):
    """(image HWC or HW, original (height, width)) as SSD's ReadImageToCVMat reads it, or
    None when OpenCV cannot read the file. min_dim/max_dim scale the image keeping its
    aspect ratio (up so the short side reaches min_dim, down so the long side stays within
    max_dim) and take precedence over resizing both sides to height x width."""
    import numpy as np

    image = cv2.imread(filename, cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE)
    if image is None:
        return None
    size = image.shape[:2]
    if min_dim > 0 or max_dim > 0:
        factor = np.float32(1)
        if min_dim > 0 and min(size) < min_dim:
            factor = np.float32(min_dim) / np.float32(min(size))
        if max_dim > 0 and int(factor * np.float32(max(size))) > max_dim:
            factor = np.float32(max_dim) / np.float32(max(size))
        if factor != 1:
            image = cv2.resize(image, None, fx=float(factor), fy=float(factor),
                               interpolation=cv2.INTER_LINEAR)
    elif height > 0 and width > 0:
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return image, size


def make_record(cv2, entry, root, options):
    """One list entry -> (serialized AnnotatedDatum, (C, H, W), annotation file missing,
    boxes outside their image), or None when OpenCV cannot read the image."""
    import numpy as np

    from .. import netkit_pb2 as pb
    from ..data.datum import array_to_datum

    _, path, second = entry
    filename = root + path
    resize = (options["resize_height"], options["resize_width"], options["min_dim"],
              options["max_dim"])
    read = read_image(cv2, filename, *resize, is_color=not options["gray"])
    if read is None:
        return None
    image, size = read
    chw = image[np.newaxis] if image.ndim == 2 else image.transpose(2, 0, 1)
    detection = options["anno_type"] == "detection"
    label = -1 if detection else second
    encoding = options["encode_type"] or (file_extension(path) if options["encoded"] else "")
    anno_datum = pb.AnnotatedDatum()
    if not encoding:
        anno_datum.datum.CopyFrom(array_to_datum(chw, label))
        anno_datum.datum.encoded = False
    else:
        data = encoded_bytes(cv2, filename, image, encoding, resized=any(resize))
        anno_datum.datum.CopyFrom(pb.Datum(channels=chw.shape[0], height=chw.shape[1],
                                           width=chw.shape[2], data=data, label=label,
                                           encoded=True))
    missing, outside = False, 0
    if detection:
        anno_datum.type = pb.AnnotatedDatum.BBOX
        labelfile = root + second
        if os.path.exists(labelfile):
            reader = READERS[options["label_type"]]
            outside = reader(labelfile, size, options["names"], Annotations(anno_datum))
        else:
            missing = True
    return anno_datum.SerializeToString(), chw.shape, missing, outside


def convert_annoset(root_folder, listfile, db_name, anno_type="classification",
                    label_type="xml", label_map_file="", check_label=False, gray=False,
                    shuffle=False, seed=0, backend="lmdb", resize_width=0, resize_height=0,
                    min_dim=0, max_dim=0, check_size=False, encoded=False, encode_type="",
                    threads=0, map_size=None):
    """Convert the images (and annotation files) of `listfile` into a new LMDB `db_name` of
    AnnotatedDatum records; returns the number of records written.

    The database is built beside `db_name` and renamed into place when complete, so an
    interrupted or failed run leaves nothing half-written. Images OpenCV cannot read are
    skipped with an error line; an annotation file that does not exist gives an image
    without boxes (as in SSD). `shuffle` orders the list by a random.Random(seed) shuffle.
    """
    if backend != "lmdb":
        raise NetkitError("--backend %s is not supported: netkit writes LMDB (--backend "
                          "lmdb), which Caffe reads as well" % backend)
    if anno_type not in ("classification", "detection"):
        raise NetkitError("unknown --anno_type '%s' (known: classification, detection)"
                          % anno_type)
    detection = anno_type == "detection"
    if detection and label_type not in READERS:
        raise NetkitError("unknown --label_type '%s' (known: %s)"
                          % (label_type, ", ".join(READERS)))
    if os.path.lexists(db_name):
        raise NetkitError("%s already exists; remove it or choose another name" % db_name)
    names = {}
    if detection:
        if not label_map_file:
            raise NetkitError("--anno_type detection needs --label_map_file")
        names = read_label_map(label_map_file, check_label)
    cv2 = opencv()
    encode_type = encode_type.lower()
    if encode_type and not cv2.haveImageWriter("." + encode_type):
        raise NetkitError("--encode_type %s: OpenCV cannot write this image format"
                          % encode_type)
    start = time.time()
    entries = read_list(listfile, detection)
    if encoded and not encode_type:
        for number, path, _ in entries:
            if not cv2.haveImageWriter("." + file_extension(path)):
                raise NetkitError("%s:%d: cannot store '%s' encoded by its extension; give "
                                  "--encode_type" % (listfile, number, path))
    if shuffle:
        logger.info("Shuffling data")
        random.Random(seed).shuffle(entries)
    logger.info("A total of %d images.", len(entries))
    if encode_type and not encoded:
        logger.info("encode_type specified, assuming encoded=true.")
    root = root_folder
    if root and not root.endswith(("/", os.sep)) and os.path.isdir(root):
        root += os.sep
    options = dict(anno_type=anno_type, label_type=label_type, names=names, gray=gray,
                   resize_height=max(0, resize_height), resize_width=max(0, resize_width),
                   min_dim=max(0, min_dim), max_dim=max(0, max_dim), encoded=encoded,
                   encode_type=encode_type)
    threads = decoding_threads(threads)
    stats = collections.Counter()
    missing_files = []

    def records(pool):
        first = None
        made = in_order(pool, lambda entry: make_record(cv2, entry, root, options),
                        entries, ahead=4 * threads + 8)
        for line_id, (entry, result) in enumerate(zip(entries, made)):
            number, path, second = entry
            if result is None:
                stats["skipped"] += 1
                logger.error("Could not open or find file %s", root + path)
                continue
            value, shape, missing, outside = result
            if missing:
                missing_files.append(root + second)
            stats["outside"] += outside
            if check_size:
                if first is None:
                    first = (path, shape)
                elif shape != first[1]:
                    raise NetkitError("%s is %s but %s is %s (--check_size)"
                                      % (root + path, shape_text(shape),
                                         root + first[0], shape_text(first[1])))
            yield "%08d_%s" % (line_id, path), value

    count = write_image_db(db_name, records, threads, map_size, "convert_annoset")
    if missing_files:
        logger.warning("%d annotation file(s) do not exist (the first: %s); their images "
                       "were stored without boxes", len(missing_files), missing_files[0])
    if stats["outside"]:
        logger.warning("%d box(es) reach outside their image or have xmin > xmax or "
                       "ymin > ymax; they were stored as given", stats["outside"])
    seconds = time.time() - start
    logger.info("Wrote %d records to %s in %.1f s; %d of %d images could not be read.",
                count, db_name, seconds, stats["skipped"], len(entries))
    return count


@click.command("convert_annoset", cls=GflagsCommand)
@click.argument("root_folder", metavar="ROOTFOLDER/")
@click.argument("listfile", metavar="LISTFILE")
@click.argument("db_name", metavar="DB_NAME")
@click.option("--anno_type", default="classification", show_default=True,
              help="The type of annotation: classification or detection.")
@click.option("--label_type", default="xml", show_default=True,
              help="The annotation file format for detection: xml, json or txt.")
@click.option("--label_map_file", default="",
              help="A LabelMap prototxt mapping object names to labels (detection).")
@click.option("--check_label/--nocheck_label", default=False,
              help="Check that no name is given twice in the label map.")
@click.option("--min_dim", type=int, default=0,
              help="Minimum dimension images are resized to (keeping the aspect ratio).")
@click.option("--max_dim", type=int, default=0,
              help="Maximum dimension images are resized to (keeping the aspect ratio).")
@db_options
def command(root_folder, listfile, db_name, anno_type, label_type, label_map_file,
            check_label, gray, shuffle, seed, backend, min_dim, max_dim, resize_width,
            resize_height, check_size, encoded, encode_type, threads, map_size):
    """Convert images and annotations to an LMDB of AnnotatedDatum (AnnotatedData layer).

    \b
    LISTFILE holds one image a line with its annotation file (detection) or label:
        VOC2007/JPEGImages/000001.jpg VOC2007/Annotations/000001.xml
    both relative to ROOTFOLDER/.
    """
    convert_annoset(root_folder, listfile, db_name, anno_type=anno_type,
                    label_type=label_type, label_map_file=label_map_file,
                    check_label=check_label, gray=gray, shuffle=shuffle, seed=seed,
                    backend=backend, resize_width=resize_width, resize_height=resize_height,
                    min_dim=min_dim, max_dim=max_dim, check_size=check_size, encoded=encoded,
                    encode_type=encode_type, threads=threads, map_size=map_size)
