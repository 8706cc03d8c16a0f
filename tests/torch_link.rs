//! libtorch is linked and usable (the `torch` feature): the set-up `make test` performs works.
#![cfg(feature = "torch")]

#[test]
fn libtorch_runs_a_matmul_on_cpu() {
    let a = tch::Tensor::from_slice(&[1f32, 2., 3., 4.]).reshape([2, 2]);
    let b = a.matmul(&a);
    let v: Vec<f32> = Vec::<f32>::try_from(b.reshape([-1])).expect("f32 tensor");
    assert_eq!(v, vec![7., 10., 15., 22.]);
}
