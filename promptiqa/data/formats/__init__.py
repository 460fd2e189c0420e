"""One parser per dataset format: each turns a dataset root's label files into records with raw scores."""
from promptiqa.data.formats.common import DatasetError, FolderIndex, image_fingerprint, verify_image
