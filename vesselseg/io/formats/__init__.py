"""One module per volume format family: how each is opened lazily and where its voxel size is.

Heavy libraries (nibabel, SimpleITK, pynrrd, imagecodecs, zarr, tifffile) are imported inside
the functions that need them, so importing the package stays fast.
"""
