//! The drivers a node offers, and which one runs a given instance.

use berth_core::launch::InstanceSpec;
use std::sync::Arc;

use super::{DockerDriver, Driver};

#[derive(Clone)]
pub struct Drivers {
    /// The first runs instances that name no driver and have no image.
    all: Vec<Arc<dyn Driver>>,
    /// The docker driver again, typed, for the engine-wide housekeeping.
    docker: Option<DockerDriver>,
}

impl Drivers {
    pub fn new(primary: Arc<dyn Driver>) -> Self {
        Self {
            all: vec![primary],
            docker: None,
        }
    }

    /// Adds the docker driver.
    pub fn with_docker(mut self, docker: DockerDriver) -> Self {
        self.docker = Some(docker.clone());
        self.with(Arc::new(docker))
    }

    pub fn docker(&self) -> Option<&DockerDriver> {
        self.docker.as_ref()
    }

    pub fn with(mut self, driver: Arc<dyn Driver>) -> Self {
        self.all.retain(|d| d.name() != driver.name());
        self.all.push(driver);
        self
    }

    pub fn names(&self) -> Vec<String> {
        self.all.iter().map(|d| d.name().to_string()).collect()
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<dyn Driver>> {
        self.all.iter().find(|d| d.name() == name)
    }

    /// The driver the instance asks for: by name, else `docker` for an image, else the
    /// node's primary driver. `Err` names what the node offers instead.
    pub fn for_instance(&self, spec: &InstanceSpec) -> Result<&Arc<dyn Driver>, String> {
        let wanted = match (spec.driver.as_str(), &spec.image) {
            ("", Some(_)) => "docker",
            ("", None) => return Ok(&self.all[0]),
            (name, _) => name,
        };
        self.by_name(wanted).ok_or_else(|| {
            format!(
                "driver {wanted:?} is not available on this node: it offers {:?}; place the app on a node with that driver",
                self.names()
            )
        })
    }
}

impl std::fmt::Debug for Drivers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Drivers").field(&self.names()).finish()
    }
}
