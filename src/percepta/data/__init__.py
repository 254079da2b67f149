"""Task-agnostic data plumbing and the real dataset formats (COCO, VOC, VG-SGG, IQA tables)."""
