from deit.data import benchmark_augmentation


def test_benchmark_augmentation_reports_a_rate():
    r = benchmark_augmentation(num_images=4, img_size=32, repeats=1)
    assert r["images"] == 4 and r["images_per_s_per_worker"] > 0 and r["img_size"] == 32
