"""Voxel size is part of a volume: every format round-trips data and spacing; bad values fail.

Oracles: the array written is the array read back (region reads included); the spacing written
is the spacing read back; libraries' own writers (SimpleITK, pynrrd, tifffile, imagecodecs,
nibabel) make the files our readers must understand; a NIfTI with a permuted and flipped affine
reads as an explicitly built ``(z, y, x)`` = (S, A, R) array.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from typer.testing import CliRunner

from vesselseg.cli import app
from vesselseg.io import (
    SpacingError,
    SpacingMismatchError,
    VolumeWriter,
    VoxelSize,
    discover_dataset,
    open_volume,
    parse_spacing,
    partial_path,
    validate_sample,
    with_spacing,
    write_volume,
)
from vesselseg.io.formats.orient import ReorientedArray
from vesselseg.io.spacing import check_spacing, normalise_unit

RNG = np.random.default_rng(1)
DATA = RNG.integers(0, 3000, (9, 14, 11)).astype(np.uint16)
FLOATS = RNG.random((9, 14, 11)).astype(np.float32)
SPACING = (5.0, 0.994, 0.994)
UM = VoxelSize(SPACING, "um", True)
REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"


def regions(shape: tuple[int, ...]) -> list[tuple]:
    """Boxes, strided, reversed, integer and Ellipsis reads of a volume of ``shape``."""
    z, y, x = shape
    return [
        (slice(1, z - 1), slice(2, y - 1), slice(1, x - 2)),
        (z // 2, slice(None), slice(None, None, 3)),
        (slice(None, None, -2), slice(y - 2, 0, -1), x - 1),
        (Ellipsis, slice(1, 3)),
    ]


def assert_round_trip(path: Path, expected: np.ndarray, spacing=SPACING, unit="um") -> None:
    volume = open_volume(path)
    assert volume.shape == expected.shape and volume.dtype == expected.dtype
    assert volume.spacing_known and volume.unit == unit
    assert volume.spacing == pytest.approx(spacing, rel=1e-6)
    for region in regions(expected.shape):
        np.testing.assert_array_equal(volume[region], expected[region])
    np.testing.assert_array_equal(np.asarray(volume), expected)


# --------------------------------------------------------------------------- our writers


@pytest.mark.parametrize(
    "name", ["v.npy", "v.raw", "v.tif", "v.zarr", "v.ome.zarr", "v.nii", "v.nii.gz"]
)
@pytest.mark.parametrize("array", [DATA, FLOATS], ids=["uint16", "float32"])
def test_writer_round_trips_data_and_spacing(tmp_path: Path, name: str, array) -> None:
    path = write_volume(tmp_path / name, array, slab=4, voxel_size=UM)
    assert not partial_path(path).exists()
    assert_round_trip(path, array)


@pytest.mark.parametrize("name", ["v.tif", "v.nii.gz", "v.ome.zarr", "v.npy"])
def test_millimetres_and_dtypes_imagej_cannot_hold(tmp_path: Path, name: str) -> None:
    array = RNG.random((5, 6, 7))  # float64: TIFF falls back to tifffile's JSON description
    size = VoxelSize((0.05, 0.02, 0.02), "mm", True)
    assert_round_trip(
        write_volume(tmp_path / name, array, voxel_size=size), array, size.spacing, "mm"
    )


@pytest.mark.parametrize("name", ["v.npy", "v.raw", "v.tif", "v.zarr", "v.ome.zarr", "v.nii.gz"])
def test_unknown_spacing_stays_unknown(tmp_path: Path, name: str) -> None:
    volume = open_volume(write_volume(tmp_path / name, DATA))
    assert not volume.spacing_known and volume.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(volume[:], DATA)


def test_writer_keeps_the_volume_spacing_and_drops_a_stale_sidecar(tmp_path: Path) -> None:
    source = write_volume(tmp_path / "a.npy", DATA, voxel_size=UM)
    copy = write_volume(tmp_path / "b.nii.gz", open_volume(source))  # spacing travels along
    assert open_volume(copy).spacing == pytest.approx(SPACING)
    write_volume(source, DATA)  # overwritten without a spacing: the old sidecar must go
    assert not open_volume(source).spacing_known
    assert not (tmp_path / "a.npy.json").exists()


def test_raw_sidecar_grows_spacing_fields(tmp_path: Path) -> None:
    path = write_volume(tmp_path / "v.raw", DATA, voxel_size=UM)
    meta = json.loads((tmp_path / "v.raw.json").read_text())
    assert meta["shape"] == list(DATA.shape) and meta["spacing"] == list(SPACING)
    assert meta["unit"] == "um"
    assert open_volume(path).spacing == SPACING


def test_nifti_writer_resumes(tmp_path: Path) -> None:
    path = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError):
        with VolumeWriter(
            path, DATA.shape, DATA.dtype, keep_partial_on_error=True, voxel_size=UM
        ) as w:
            w[:4] = DATA[:4]
            raise RuntimeError("crash")
    assert partial_path(path).exists() and not path.exists()
    with VolumeWriter(path, DATA.shape, DATA.dtype, resume=True, voxel_size=UM) as w:
        assert w.resumed
        np.testing.assert_array_equal(w[:4], DATA[:4])
        w[4:] = DATA[4:]
    assert_round_trip(path, DATA)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
def test_nifti_we_write_reads_in_simpleitk(tmp_path: Path, name: str) -> None:
    """Another library's reader is the oracle for our header: ITK sees the same voxels, the
    same spacing (in its x, y, z order) and the unit we wrote (ITK converts to mm)."""
    import SimpleITK as sitk

    path = write_volume(tmp_path / name, DATA, voxel_size=UM)
    image = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), DATA)
    assert image.GetSpacing() == pytest.approx([s / 1000 for s in reversed(SPACING)])


def test_ome_zarr_metadata_follows_ngff(tmp_path: Path) -> None:
    path = write_volume(tmp_path / "v.ome.zarr", DATA, voxel_size=UM)
    attrs = json.loads((path / "zarr.json").read_text())["attributes"]["ome"]
    assert attrs["version"] == "0.5"
    (multiscale,) = attrs["multiscales"]
    assert [a["name"] for a in multiscale["axes"]] == ["z", "y", "x"]
    assert {a["unit"] for a in multiscale["axes"]} == {"micrometer"}
    assert multiscale["datasets"][0]["coordinateTransformations"] == [
        {"type": "scale", "scale": list(SPACING)}
    ]
    assert open_volume(path).kind == "ome-zarr"


def test_tiff_writer_uses_imagej_tags(tmp_path: Path) -> None:
    path = write_volume(tmp_path / "v.tif", DATA, voxel_size=UM)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        assert tif.imagej_metadata["spacing"] == 5.0 and tif.imagej_metadata["unit"] == "um"
        x_res, y_res = tif.pages[0].resolution
        assert 1 / x_res == pytest.approx(0.994) and 1 / y_res == pytest.approx(0.994)


# --------------------------------------------------------------------------- other writers' files


def scale(values: list[float]) -> dict:
    return {"type": "scale", "scale": values}


def test_ome_zarr_0_4_with_channel_axis(tmp_path: Path) -> None:
    path = tmp_path / "v.ome.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", shape=(1, *DATA.shape), dtype=DATA.dtype, chunks=(1, 4, 8, 8))[:] = (
        DATA[None]
    )
    group.create_array("1", shape=(1, 5, 7, 6), dtype=DATA.dtype)
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"
    ]
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": axes,
            "datasets": [
                {"path": "0", "coordinateTransformations": [scale([1, 2.5, 0.994, 0.994])]},
                {"path": "1", "coordinateTransformations": [scale([1, 5, 2, 2])]},
            ],
            "coordinateTransformations": [scale([1, 2, 1, 1])],
        }
    ]  # fmt: skip
    volume = open_volume(path)
    assert volume.chunks == (4, 8, 8)
    assert_round_trip(path, DATA)


def test_ome_tiff_physical_sizes(tmp_path: Path) -> None:
    path = tmp_path / "v.ome.tif"
    meta = {"axes": "ZYX", "PhysicalSizeZ": 5.0, "PhysicalSizeY": 0.994, "PhysicalSizeX": 0.994}
    tifffile.imwrite(path, DATA, metadata={**meta, "PhysicalSizeXUnit": "µm"}, compression="zlib")
    assert_round_trip(path, DATA)
    nm = {k: v * 1000 for k, v in meta.items() if k != "axes"}
    units = {f"PhysicalSize{a}Unit": "nm" for a in "ZYX"}
    tifffile.imwrite(path, DATA, metadata={"axes": "ZYX", **nm, **units})
    assert_round_trip(path, DATA)  # nanometres come back as micrometres


def slice_folder(folder: Path, write) -> Path:
    folder.mkdir(parents=True)
    for z in range(DATA.shape[0]):
        write(folder / f"slice_{z:04d}", DATA[z])
    return folder


def test_tiff_slice_folder_spacing_from_first_slice_tags(tmp_path: Path) -> None:
    def imagej(path: Path, plane: np.ndarray) -> None:
        resolution = (1 / 0.994, 1 / 0.994)
        meta = {"spacing": 5.0, "unit": "micron"}
        tifffile.imwrite(
            path.with_suffix(".tif"), plane, imagej=True, resolution=resolution, metadata=meta
        )

    assert_round_trip(slice_folder(tmp_path / "images", imagej), DATA)


def test_slice_folders_spacing_from_sidecar(tmp_path: Path) -> None:
    import imagecodecs

    def jp2(path: Path, plane: np.ndarray) -> None:
        path.with_suffix(".jp2").write_bytes(imagecodecs.jpeg2k_encode(plane, level=0))

    def tif(path: Path, plane: np.ndarray) -> None:
        tifffile.imwrite(path.with_suffix(".tif"), plane)

    for name, write in (("hoa_jp2", jp2), ("tif", tif)):
        folder = slice_folder(tmp_path / name, write)
        assert not open_volume(folder).spacing_known
        Path(f"{folder}.json").write_text(json.dumps({"spacing": list(SPACING), "unit": "µm"}))
        assert_round_trip(folder, DATA)
    assert open_volume(tmp_path / "hoa_jp2").kind == "jp2"


def sitk_image(array: np.ndarray, spacing_zyx=SPACING):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(reversed(spacing_zyx)))
    return image


@pytest.mark.parametrize("name", ["v.mha", "v.mhd", "v.nrrd"])
@pytest.mark.parametrize("compressed", [False, True])
def test_simpleitk_files(tmp_path: Path, name: str, compressed: bool) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(sitk_image(DATA), str(tmp_path / name), useCompression=compressed)
    assert_round_trip(tmp_path / name, DATA, unit="mm")  # ITK's unit convention


def test_nrrd_space_units_and_detached_header(tmp_path: Path) -> None:
    import nrrd

    header = {"space dimension": 3, "space units": ["microns"] * 3}
    header["space directions"] = np.diag(list(reversed(SPACING)))
    nrrd.write(str(tmp_path / "v.nrrd"), DATA, header, index_order="C")  # gzip: loaded once
    assert_round_trip(tmp_path / "v.nrrd", DATA)
    header["encoding"] = "raw"
    nrrd.write(str(tmp_path / "d.nhdr"), DATA, header, detached_header=True, index_order="C")
    assert_round_trip(tmp_path / "d.nhdr", DATA)
    assert isinstance(open_volume(tmp_path / "d.nhdr")._array, np.memmap)  # raw: memory-mapped


# --------------------------------------------------------------------------- NIfTI orientation


def test_nifti_affine_is_respected(tmp_path: Path) -> None:
    """Voxel axes (i, j, k) point along (A, S, -R): (z, y, x) = (S, A, R) is
    ``x[a, s, n - 1 - r]``, i.e. axis j first, then i, then k reversed."""
    import nibabel as nib

    stored = RNG.integers(0, 1000, (6, 8, 5)).astype(np.int16)  # (i, j, k)
    affine = np.array(
        [[0, 0, -2.0, 10], [3.0, 0, 0, -4], [0, 0.5, 0, 7], [0, 0, 0, 1]]
    )  # R = -2 k, A = 3 i, S = 0.5 j
    image = nib.Nifti1Image(stored, affine)
    image.header.set_xyzt_units("mm")
    nib.save(image, tmp_path / "v.nii.gz")
    oracle = np.empty((8, 6, 5), np.int16)  # (S: j, A: i, R: k reversed)
    for s in range(8):
        for a in range(6):
            for r in range(5):
                oracle[s, a, r] = stored[a, s, 4 - r]
    assert_round_trip(tmp_path / "v.nii.gz", oracle, (0.5, 3.0, 2.0), "mm")
    # the world coordinates grow along z (S), y (A) and x (R) of what was read
    world = lambda s, a, r: affine @ [a, s, 4 - r, 1]  # noqa: E731
    assert world(1, 0, 0)[2] > world(0, 0, 0)[2] and world(0, 1, 0)[1] > world(0, 0, 0)[1]
    assert world(0, 0, 1)[0] > world(0, 0, 0)[0]


def test_nifti_4d_singleton_and_scaling(tmp_path: Path) -> None:
    import nibabel as nib

    stored = RNG.integers(0, 100, (5, 6, 7, 1)).astype(np.int16)
    image = nib.Nifti1Image(stored, np.diag([0.994, 0.994, 5.0, 1.0]))
    image.header.set_xyzt_units("micron")
    image.header.set_slope_inter(0.5, 10.0)
    nib.save(image, tmp_path / "v.nii")
    expected = (stored[..., 0] * 0.5 + 10.0).transpose(2, 1, 0)
    volume = open_volume(tmp_path / "v.nii")
    assert volume.spacing == SPACING and volume.dtype.kind == "f"
    np.testing.assert_allclose(volume[1:4, ::2, 3], expected[1:4, ::2, 3])


def test_reoriented_view_matches_numpy() -> None:
    source = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    view = ReorientedArray(source, axes=(2, 0, 1), flips=(True, False, True))
    oracle = np.flip(np.flip(source.transpose(2, 0, 1), 0), 2)
    keys = [
        (slice(None),) * 3,
        (slice(1, 5, 2), slice(None, None, -1), 3),
        (-1, 2, slice(4, 0, -3)),
        (slice(3, 3), slice(None), slice(None)),
        Ellipsis,
        2,
    ]
    for key in keys:
        np.testing.assert_array_equal(view[key], oracle[key])


# --------------------------------------------------------------------------- lazy reads


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.parametrize("name", ["big.nii", "big.mha", "big.nrrd"])
def test_region_reads_do_not_load_the_file(tmp_path: Path, name: str) -> None:
    shape = (128, 256, 256)  # 64 MiB of float32
    if name.endswith(".nii"):
        with VolumeWriter(tmp_path / name, shape, np.float32, voxel_size=UM) as writer:
            writer[60:70, :32, :32] = 1.0
    else:
        import SimpleITK as sitk

        data = np.zeros(shape, np.float32)
        data[60:70, :32, :32] = 1.0
        sitk.WriteImage(sitk_image(data), str(tmp_path / name))
        del data
    volume = open_volume(tmp_path / name)
    volume[0:1, 0:1, 0:1]  # the library's own start-up allocations
    before = rss_bytes()
    tile = volume[56:72, :32, :32]
    grown = rss_bytes() - before
    assert tile.sum() == 10 * 32 * 32
    assert grown < 24 * 2**20, f"a 64 KiB tile grew RSS by {grown / 2**20:.1f} MiB"


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    "text, message",
    [
        ("5,1", "three values"),
        ("5,1,1,1", "three values"),
        ("a,b,c", "expected Z,Y,X numbers"),
        ("0,1,1", "positive and finite"),
        ("-1,1,1", "positive and finite"),
        ("nan,1,1", "positive and finite"),
        ("inf,1,1", "positive and finite"),
    ],
)
def test_parse_spacing_errors_are_one_line(text: str, message: str) -> None:
    with pytest.raises(SpacingError, match=message) as info:
        parse_spacing(text)
    assert "\n" not in str(info.value)


def test_parse_spacing_and_units() -> None:
    assert parse_spacing("5, 0.994,0.994") == SPACING
    assert parse_spacing("5x1x1") == (5.0, 1.0, 1.0)
    for text in ("um", "µm", "μm", "micron", "Micrometer", "\\u00B5m"):
        assert normalise_unit(text) == ("um", 1.0)
    assert normalise_unit("millimeter") == ("mm", 1.0) and normalise_unit("cm") == ("mm", 10.0)
    with pytest.raises(SpacingError, match="unknown unit 'furlong'"):
        normalise_unit("furlong")
    with pytest.raises(SpacingError, match="three numbers"):
        check_spacing("1,2,3")


def test_with_spacing_overrides_and_checks(tmp_path: Path) -> None:
    volume = open_volume(write_volume(tmp_path / "v.npy", DATA))
    assert not volume.spacing_known
    measured = with_spacing(volume, SPACING)
    assert measured.spacing == SPACING and measured.unit == "um" and measured.spacing_known
    np.testing.assert_array_equal(measured[2:4], DATA[2:4])
    assert with_spacing(measured, (1, 2, 3), "millimetre").unit == "mm"
    with pytest.raises(SpacingError, match="unknown unit"):
        with_spacing(volume, SPACING, "pixel")
    with pytest.raises(SpacingError, match="positive"):
        with_spacing(volume, (1.0, 0.0, 1.0))


@pytest.mark.parametrize(
    "sidecar, message",
    [
        ({"spacing": [5, 1]}, "three values"),
        ({"spacing": [5, 1, -1]}, "positive and finite"),
        ({"spacing": [5, 1, "x"]}, "not a number"),
        ({"spacing": [1, 1, 1], "unit": "parsec"}, "unknown unit"),
    ],
)
def test_bad_sidecar_spacing(tmp_path: Path, sidecar: dict, message: str) -> None:
    path = tmp_path / "v.npy"
    np.save(path, DATA)
    (tmp_path / "v.npy.json").write_text(json.dumps(sidecar))
    with pytest.raises(SpacingError, match=message) as info:
        open_volume(path)
    assert "v.npy.json" in str(info.value)


def test_broken_header_spacing_is_an_error_unless_overridden(tmp_path: Path) -> None:
    path = write_volume(tmp_path / "v.ome.zarr", DATA, voxel_size=UM)
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"] = [
        {"type": "scale", "scale": [5.0, 0.0, 1.0]}
    ]
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(SpacingError, match="positive and finite.*--spacing"):
        open_volume(path)
    volume = open_volume(path, spacing=(2.0, 1.0, 1.0), unit="mm")
    assert volume.spacing == (2.0, 1.0, 1.0) and volume.unit == "mm"
    np.testing.assert_array_equal(volume[:], DATA)


def pair(folder: Path, image_spacing, mask_spacing, mask_suffix: str = ".npy") -> None:
    folder.mkdir(exist_ok=True)
    mask = np.full(DATA.shape, 2, np.uint8)
    write_volume(folder / "data_0.nii.gz", DATA, voxel_size=image_spacing)
    write_volume(folder / f"mask_0{mask_suffix}", mask, voxel_size=mask_spacing)


def test_mask_without_spacing_agrees(tmp_path: Path) -> None:
    pair(tmp_path, UM, None)
    (sample,) = discover_dataset(tmp_path, require_masks=True)
    assert sample.id == "0" and sample.mask.name == "mask_0.npy"
    assert validate_sample(sample).background == DATA.size


def test_mask_with_other_spacing_names_both_files(tmp_path: Path) -> None:
    pair(tmp_path, UM, VoxelSize((2.5, 0.994, 0.994), "um", True), ".nii")
    (sample,) = discover_dataset(tmp_path)
    with pytest.raises(SpacingMismatchError) as info:
        validate_sample(sample)
    message = str(info.value)
    assert "mask_0.nii" in message and "data_0.nii.gz" in message and "\n" not in message


def test_unit_mismatch_is_an_error(tmp_path: Path) -> None:
    pair(tmp_path, UM, VoxelSize((0.005, 0.000994, 0.000994), "mm", True), ".tif")
    (sample,) = discover_dataset(tmp_path)
    with pytest.raises(SpacingMismatchError, match="unit mm does not match unit um"):
        validate_sample(sample)


def test_bad_spacing_through_the_cli_is_one_line_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "v.npy"
    np.save(path, DATA)
    (tmp_path / "v.npy.json").write_text(json.dumps({"spacing": [0, 1, 1]}))
    result = CliRunner().invoke(app, ["info", str(path)])
    assert result.exit_code == 2
    assert "v.npy.json: spacing values must be positive" in result.output
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- discovery and info


def test_discovery_of_new_formats(tmp_path: Path) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(sitk_image(DATA), str(tmp_path / "data_a.mhd"))  # + data_a.raw
    sitk.WriteImage(sitk_image(DATA), str(tmp_path / "data_b.nrrd"))
    write_volume(tmp_path / "data_c.ome.zarr", DATA, voxel_size=UM)
    write_volume(tmp_path / "mask_c.nii.gz", np.zeros(DATA.shape, np.uint8))
    samples = discover_dataset(tmp_path)
    assert [s.id for s in samples] == ["a", "b", "c"]
    assert samples[2].mask is not None and samples[2].mask.name == "mask_c.nii.gz"


def test_info_prints_spacing(tmp_path: Path) -> None:
    runner = CliRunner()
    measured = write_volume(tmp_path / "data_0.nii.gz", DATA, voxel_size=UM)
    result = runner.invoke(app, ["info", str(measured)])
    assert result.exit_code == 0, result.output
    assert "spacing: 5 x 0.994 x 0.994 um (z, y, x)" in result.output
    plain = write_volume(tmp_path / "data_1.npy", DATA)
    assert "spacing: unknown" in runner.invoke(app, ["info", str(plain)]).output
    table = runner.invoke(app, ["info", str(tmp_path)]).output
    assert "5 x 0.994 x 0.994 um" in table and "unknown" in table


@pytest.mark.skipif(not REALDATA.is_dir(), reason="shared/realdata not here")
def test_real_two_photon_stack_round_trips(tmp_path: Path) -> None:
    """A real stack (vesselNN, Teikari et al. 2016: 15 x 512 x 512, 5 x 0.994 x 0.994 um)."""
    stack = np.load(REALDATA / "vesselnn_burgess2014_tgMouse.npz")
    data, truth = stack["data"], stack["truth"]
    for name in ("data_0.nii.gz", "data_1.ome.zarr", "data_2.tif"):
        path = write_volume(tmp_path / name, data, voxel_size=UM)
        volume = open_volume(path)
        assert volume.spacing == pytest.approx(SPACING) and volume.shape == (15, 512, 512)
        np.testing.assert_array_equal(volume[3:9, 100:300, 200:456], data[3:9, 100:300, 200:456])
    write_volume(tmp_path / "mask_0.npy", np.where(truth > 0, 1, 2).astype(np.uint8))
    sample = discover_dataset(tmp_path)[0]
    assert sample.image.name == "data_0.nii.gz" and sample.mask.name == "mask_0.npy"
    assert validate_sample(sample).vessel == int((truth > 0).sum())
