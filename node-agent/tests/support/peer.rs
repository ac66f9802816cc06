//! runc as the reference peer: a busybox container in one sandbox, checkpointed
//! by `runc checkpoint`, and its images restored by `runc restore` into another
//! sandbox. The images stay on disk so that another restorer (the agent) can
//! restore the very same images and be compared with runc's [`Landing`].

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use podrestore_agent::sandbox::runc::{BundleSpec, OciNamespace, Runc};

use super::{Counter, Ground, Landing, Sandbox, scripts};

/// runc with its state, logs and bundles under a test's scratch space.
pub struct Peer {
    /// The runc command.
    pub runc: Runc,
    /// Where bundles, images and work directories go.
    pub dir: PathBuf,
    /// The containers and cgroups to remove at the end.
    containers: Vec<String>,
}

/// A checkpoint made by runc, ready to be restored again and again.
#[derive(Debug, Clone)]
pub struct PeerCheckpoint {
    /// The container's ID at checkpoint time.
    pub id: String,
    /// The CRIU images (`runc checkpoint --image-path`).
    pub images: PathBuf,
    /// The container's root filesystem; a restore must use the same one
    /// (CRIU's `--root`, runc's bundle `root.path`).
    pub rootfs: PathBuf,
    /// The bundle the container ran from.
    pub bundle: BundleSpec,
    /// The container's counter, read from the host.
    pub counter: Counter,
    /// The counter's value when the checkpoint was taken.
    pub last: u64,
    /// The container's PID inside the sandbox when checkpointed.
    pub pid_inside: u32,
}

/// A container restored by runc.
#[derive(Debug, Clone)]
pub struct PeerRestore {
    /// The container ID it was restored as.
    pub id: String,
    /// The restored init's host PID.
    pub pid: u32,
    /// How long `runc restore -d` took.
    pub took: Duration,
}

impl Peer {
    /// runc under `ground`'s scratch space.
    pub fn new(ground: &Ground) -> Peer {
        let dir = ground.dir("runc");
        let runc = Runc::new(dir.join("state"), dir.join("logs")).expect("runc");
        Peer {
            runc,
            dir,
            containers: Vec::new(),
        }
    }

    /// Unique container IDs per process, so parallel tests do not meet.
    pub fn container_id(&self, label: &str) -> String {
        format!("{label}-{}-{}", std::process::id(), self.containers.len())
    }

    /// Runs a busybox counter as a container in `source`'s namespaces (pid,
    /// network, ipc, uts joined; a new mount namespace) and checkpoints it with
    /// `runc checkpoint`, which stops it.
    pub fn checkpoint_counter(
        &mut self,
        ground: &Ground,
        source: &Sandbox,
        label: &str,
    ) -> PeerCheckpoint {
        let id = self.container_id(label);
        let rootfs = ground.rootfs(&format!("rootfs-{id}"));
        let counter = Counter {
            file: rootfs.join("data/count"),
        };
        let script = scripts::counter("/bin/busybox", "/data/count", "0.05");
        let bundle = BundleSpec::shell_in_sandbox(&rootfs, source, &id, &script);
        let bundle_dir = bundle
            .write(&self.dir.join(format!("bundle-{id}")))
            .expect("bundle");
        self.containers.push(id.clone());
        self.runc
            .run_detached(&id, &bundle_dir)
            .expect("runc run -d");
        let state = self.runc.state(&id).expect("runc state");
        assert_eq!(state.status, "running");
        counter.wait_past(2);
        let pid_inside = super::procfs::nspids(state.pid)
            .last()
            .copied()
            .unwrap_or_default();
        super::assert_in_sandbox(state.pid, source);

        let images = self.dir.join(format!("images-{id}"));
        let work = self.dir.join(format!("checkpoint-work-{id}"));
        self.runc
            .checkpoint(&id, &images, &work, false)
            .expect("runc checkpoint");
        let last = counter.assert_stopped(Duration::from_millis(300));
        PeerCheckpoint {
            id,
            images,
            rootfs,
            bundle,
            counter,
            last,
            pid_inside,
        }
    }

    /// `runc restore -d` of `checkpoint` with a config naming `target`'s
    /// namespaces instead of the source's.
    pub fn restore(&mut self, checkpoint: &PeerCheckpoint, target: &Sandbox) -> PeerRestore {
        self.try_restore(checkpoint, OciNamespace::for_sandbox(target))
            .unwrap_or_else(|err| panic!("runc restore: {err}"))
    }

    /// `runc restore -d` of `checkpoint` with the given `linux.namespaces`.
    pub fn try_restore(
        &mut self,
        checkpoint: &PeerCheckpoint,
        namespaces: Vec<OciNamespace>,
    ) -> Result<PeerRestore, podrestore_agent::sandbox::SandboxError> {
        let id = self.container_id(&format!("{}-r", checkpoint.id));
        let mut bundle = checkpoint.bundle.clone();
        bundle.namespaces = namespaces;
        bundle.cgroups_path = format!("/podrestore-{id}");
        let bundle_dir = bundle.write(&self.dir.join(format!("bundle-{id}")))?;
        let work = self.dir.join(format!("restore-work-{id}"));
        self.containers.push(id.clone());
        let took = self
            .runc
            .restore_detached(&id, &bundle_dir, &checkpoint.images, &work)?;
        let pid = self.runc.state(&id)?.pid;
        Ok(PeerRestore { id, pid, took })
    }

    /// Where a runc-restored process landed.
    pub fn landing(&self, restored: &PeerRestore, source: &Sandbox, target: &Sandbox) -> Landing {
        Landing::observe(restored.pid, source, target).expect("observe namespaces")
    }

    /// Kills and deletes a restored container, freeing its PIDs in the target.
    pub fn remove(&mut self, id: &str) {
        self.runc.remove(id).expect("runc delete");
    }

    /// The log of the last restore of `id` (CRIU's `restore.log`).
    pub fn restore_log(&self, id: &str) -> String {
        fs::read_to_string(self.dir.join(format!("restore-work-{id}/restore.log")))
            .unwrap_or_default()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        for id in self.containers.drain(..) {
            if let Err(err) = self.runc.remove(&id) {
                eprintln!("{err}");
            }
            // runc removes the cgroups it created, but not after a failed restore.
            let _ = podrestore_agent::sandbox::runc::remove_cgroup(&format!("/podrestore-{id}"));
        }
    }
}
