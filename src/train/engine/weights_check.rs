//! Finding a non-finite parameter after an epoch, in one device sync.

use crate::nn::Backend;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// The dotted path and sum of the first parameter of `module` holding a NaN or an infinity,
/// or `None` when every weight is finite. One sum per parameter, read together.
pub fn first_non_finite_parameter<B: Backend, M: Module<B>>(module: &M) -> Option<(String, f64)> {
    struct Sums<B: Backend> {
        path: Vec<String>,
        names: Vec<String>,
        sums: Vec<Tensor<B, 1>>,
    }
    impl<B: Backend> ModuleVisitor<B> for Sums<B> {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.names.push(self.path.join("."));
            // A NaN or an infinity anywhere makes the sum non-finite (inf - inf is NaN).
            self.sums.push(param.val().sum());
        }
    }
    let mut visitor = Sums {
        path: Vec::new(),
        names: Vec::new(),
        sums: Vec::new(),
    };
    module.visit(&mut visitor);
    if visitor.sums.is_empty() {
        return None;
    }
    let sums: Vec<f64> = Tensor::cat(visitor.sums, 0)
        .into_data()
        .convert::<f64>()
        .to_vec()
        .expect("f64 data");
    visitor
        .names
        .into_iter()
        .zip(sums)
        .find(|(_, sum)| !sum.is_finite())
}
