//! Gradient diagnostics: which parameters a backward pass did not reach.

use crate::nn::AutodiffBackend;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{ElementConversion, Tensor};

/// The dotted paths of the parameters of `module` whose gradient in `grads` is missing or
/// exactly zero. An empty list means the backward pass reached every parameter.
pub fn params_without_gradient<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    grads: &B::Gradients,
) -> Vec<String> {
    struct Check<'a, B: AutodiffBackend> {
        grads: &'a B::Gradients,
        path: Vec<String>,
        unreached: Vec<String>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Check<'_, B> {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let reached = param
                .val()
                .grad(self.grads)
                .map(|g| g.abs().sum().into_scalar().elem::<f64>() > 0.0)
                .unwrap_or(false);
            if !reached {
                self.unreached.push(self.path.join("."));
            }
        }
    }
    let mut check = Check {
        grads,
        path: Vec::new(),
        unreached: Vec::new(),
    };
    module.visit(&mut check);
    check.unreached
}
