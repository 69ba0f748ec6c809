//! The environment an instance runs with.

use std::collections::BTreeMap;

use berth_core::launch::InstanceSpec;

use super::Supervisor;

impl Supervisor {
    /// The complete environment of an instance. Nothing of the agent's own environment
    /// leaks in (it may hold the agent's settings) except PATH and locale; the spec's
    /// variables come next and Berth's own last, so an app cannot shadow its ports.
    /// The program's environment. A container keeps its image's PATH and HOME: only the
    /// app's variables and Berth's are added, never the agent's host paths.
    pub fn env_for(
        &self,
        spec: &InstanceSpec,
        ports: &[u16],
        in_container: bool,
    ) -> BTreeMap<String, String> {
        let config = &self.inner.config;
        let mut env = BTreeMap::new();
        if !in_container {
            env.insert(
                "PATH".to_string(),
                std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
            );
            for key in ["LANG", "LC_ALL", "TZ"] {
                if let Ok(value) = std::env::var(key) {
                    env.insert(key.to_string(), value);
                }
            }
            let work = self.inner.store.work_dir(&spec.instance_id);
            env.insert("HOME".to_string(), work.display().to_string());
        }
        env.extend(spec.env.clone());
        if let Some(port) = ports.first() {
            env.insert("PORT".to_string(), port.to_string());
        }
        for (i, port) in ports.iter().enumerate() {
            env.insert(format!("PORT{i}"), port.to_string());
        }
        let berth = [
            ("HOST", config.advertise.clone()),
            ("BERTH_APP_ID", spec.app_id.to_string()),
            ("BERTH_APP", spec.app_id.to_string()),
            ("BERTH_APP_VERSION", spec.app_version.to_string()),
            ("BERTH_INSTANCE_ID", spec.instance_id.to_string()),
            ("BERTH_INSTANCE", spec.instance_id.to_string()),
            ("BERTH_NODE", config.node_id.clone()),
        ];
        for (key, value) in berth {
            env.insert(key.to_string(), value);
        }
        if let Some(addr) = &config.log_addr {
            env.insert("BERTH_LOG_ADDR".to_string(), addr.clone());
        }
        env
    }

    /// Labels a container carries, to tell Berth's containers and their instances apart.
    pub fn labels_for(&self, spec: &InstanceSpec) -> BTreeMap<String, String> {
        let mut labels: BTreeMap<String, String> = spec.labels.clone();
        labels.insert("berth.instance".into(), spec.instance_id.to_string());
        labels.insert("berth.app".into(), spec.app_id.to_string());
        labels.insert("berth.app_version".into(), spec.app_version.to_string());
        labels.insert("berth.node".into(), self.inner.config.node_id.clone());
        labels
    }
}
