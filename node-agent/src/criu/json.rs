//! A request's `criu_opts` as JSON, for people to read what would be sent.
//!
//! Keys are the rpc.proto field names; only fields that are set appear
//! (repeated fields when non-empty, `images_dir_fd` when not -1). Messages
//! become objects keyed by their field names (`inherit_fd` as
//! `[{"key": ..., "fd": ...}]`, `join_ns` as `[{"ns": ..., "ns_file": ...}]`).
//! Enum fields (`manage_cgroups_mode`, `network_lock`, `pre_dump_mode`) are
//! printed as their rpc.proto value names (`"SOFT"`), or as the number when it
//! names no value.

use podrestore_proto::criu as rpc;
use serde_json::{Map, Value, json};

/// Renders the set fields of `opts` as a JSON object.
pub fn opts_to_json(opts: &rpc::CriuOpts) -> Value {
    // Destructured without `..`: a field added to rpc.proto fails to compile
    // here until it is rendered.
    let rpc::CriuOpts {
        images_dir_fd,
        images_dir,
        pid,
        leave_running,
        ext_unix_sk,
        tcp_established,
        evasive_devices,
        shell_job,
        file_locks,
        log_level,
        log_file,
        ps,
        notify_scripts,
        root,
        parent_img,
        track_mem,
        auto_dedup,
        work_dir_fd,
        link_remap,
        veths,
        cpu_cap,
        force_irmap,
        exec_cmd,
        ext_mnt,
        manage_cgroups,
        cg_root,
        rst_sibling,
        inherit_fd,
        auto_ext_mnt,
        ext_sharing,
        ext_masters,
        skip_mnt,
        enable_fs,
        unix_sk_ino,
        manage_cgroups_mode,
        ghost_limit,
        irmap_scan_paths,
        external,
        empty_ns,
        join_ns,
        cgroup_props,
        cgroup_props_file,
        cgroup_dump_controller,
        freeze_cgroup,
        timeout,
        tcp_skip_in_flight,
        weak_sysctls,
        lazy_pages,
        status_fd,
        orphan_pts_master,
        config_file,
        tcp_close,
        lsm_profile,
        tls_cacert,
        tls_cacrl,
        tls_cert,
        tls_key,
        tls,
        tls_no_cn_verify,
        cgroup_yard,
        pre_dump_mode,
        pidfd_store_sk,
        lsm_mount_context,
        network_lock,
        mntns_compat_mode,
        skip_file_rwx_check,
        unprivileged,
        leave_stopped,
        display_stats,
        log_to_stderr,
    } = opts;

    let mut m = Map::new();
    macro_rules! scalars {
        ($($field:ident),* $(,)?) => {
            $( if let Some(v) = $field { m.insert(stringify!($field).to_owned(), json!(v)); } )*
        };
    }
    macro_rules! lists {
        ($($field:ident),* $(,)?) => {
            $( if !$field.is_empty() { m.insert(stringify!($field).to_owned(), json!($field)); } )*
        };
    }
    macro_rules! messages {
        ($($field:ident => |$item:ident| $render:expr),* $(,)?) => {
            $(
                if !$field.is_empty() {
                    let items: Vec<Value> = $field.iter().map(|$item| $render).collect();
                    m.insert(stringify!($field).to_owned(), Value::Array(items));
                }
            )*
        };
    }
    macro_rules! enums {
        ($($field:ident: $ty:ty),* $(,)?) => {
            $(
                if let Some(v) = *$field {
                    let named = <$ty>::try_from(v)
                        .map_or_else(|_| json!(v), |e| json!(e.as_str_name()));
                    m.insert(stringify!($field).to_owned(), named);
                }
            )*
        };
    }

    if *images_dir_fd != -1 {
        m.insert("images_dir_fd".to_owned(), json!(images_dir_fd));
    }
    scalars!(
        images_dir,
        pid,
        leave_running,
        ext_unix_sk,
        tcp_established,
        evasive_devices,
        shell_job,
        file_locks,
        log_level,
        log_file,
    );
    if let Some(ps) = ps {
        let mut o = Map::new();
        if let Some(v) = &ps.address {
            o.insert("address".to_owned(), json!(v));
        }
        if let Some(v) = ps.port {
            o.insert("port".to_owned(), json!(v));
        }
        if let Some(v) = ps.pid {
            o.insert("pid".to_owned(), json!(v));
        }
        if let Some(v) = ps.fd {
            o.insert("fd".to_owned(), json!(v));
        }
        m.insert("ps".to_owned(), Value::Object(o));
    }
    scalars!(
        notify_scripts,
        root,
        parent_img,
        track_mem,
        auto_dedup,
        work_dir_fd,
        link_remap
    );
    messages!(veths => |v| json!({"if_in": v.if_in, "if_out": v.if_out}));
    scalars!(cpu_cap, force_irmap);
    lists!(exec_cmd);
    messages!(ext_mnt => |e| json!({"key": e.key, "val": e.val}));
    scalars!(manage_cgroups);
    messages!(cg_root => |c| match &c.ctrl {
        Some(ctrl) => json!({"ctrl": ctrl, "path": c.path}),
        None => json!({"path": c.path}),
    });
    scalars!(rst_sibling);
    messages!(inherit_fd => |i| json!({"key": i.key, "fd": i.fd}));
    scalars!(auto_ext_mnt, ext_sharing, ext_masters);
    lists!(skip_mnt, enable_fs);
    messages!(unix_sk_ino => |u| json!({"inode": u.inode}));
    enums!(manage_cgroups_mode: rpc::CriuCgMode);
    scalars!(ghost_limit);
    lists!(irmap_scan_paths, external);
    scalars!(empty_ns);
    messages!(join_ns => |j| match &j.extra_opt {
        Some(extra) => json!({"ns": j.ns, "ns_file": j.ns_file, "extra_opt": extra}),
        None => json!({"ns": j.ns, "ns_file": j.ns_file}),
    });
    scalars!(cgroup_props, cgroup_props_file);
    lists!(cgroup_dump_controller);
    scalars!(
        freeze_cgroup,
        timeout,
        tcp_skip_in_flight,
        weak_sysctls,
        lazy_pages,
        status_fd,
        orphan_pts_master,
        config_file,
        tcp_close,
        lsm_profile,
        tls_cacert,
        tls_cacrl,
        tls_cert,
        tls_key,
        tls,
        tls_no_cn_verify,
        cgroup_yard,
    );
    enums!(pre_dump_mode: rpc::CriuPreDumpMode);
    scalars!(pidfd_store_sk, lsm_mount_context);
    enums!(network_lock: rpc::CriuNetworkLockMethod);
    scalars!(
        mntns_compat_mode,
        skip_file_rwx_check,
        unprivileged,
        leave_stopped,
        display_stats,
        log_to_stderr,
    );
    Value::Object(m)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn unset_options_render_empty() {
        assert_eq!(opts_to_json(&rpc::CriuOpts::default()), json!({}));
    }

    #[test]
    fn every_field_renders_under_its_proto_name() {
        let s = || Some("s".to_owned());
        let opts = rpc::CriuOpts {
            images_dir_fd: 3,
            images_dir: s(),
            pid: Some(1),
            leave_running: Some(true),
            ext_unix_sk: Some(true),
            tcp_established: Some(true),
            evasive_devices: Some(true),
            shell_job: Some(true),
            file_locks: Some(true),
            log_level: Some(4),
            log_file: s(),
            ps: Some(rpc::CriuPageServerInfo {
                address: s(),
                port: Some(1),
                pid: None,
                fd: None,
            }),
            notify_scripts: Some(true),
            root: s(),
            parent_img: s(),
            track_mem: Some(true),
            auto_dedup: Some(true),
            work_dir_fd: Some(5),
            link_remap: Some(true),
            veths: vec![rpc::CriuVethPair {
                if_in: "eth0".into(),
                if_out: "veth1".into(),
            }],
            cpu_cap: Some(1),
            force_irmap: Some(true),
            exec_cmd: vec!["true".into()],
            ext_mnt: vec![rpc::ExtMountMap {
                key: "k".into(),
                val: "v".into(),
            }],
            manage_cgroups: Some(true),
            cg_root: vec![rpc::CgroupRoot {
                ctrl: Some("cpu".into()),
                path: "/x".into(),
            }],
            rst_sibling: Some(true),
            inherit_fd: vec![rpc::InheritFd {
                key: "extRootNetNS".into(),
                fd: 4,
            }],
            auto_ext_mnt: Some(true),
            ext_sharing: Some(true),
            ext_masters: Some(true),
            skip_mnt: vec!["/a".into()],
            enable_fs: vec!["fuse".into()],
            unix_sk_ino: vec![rpc::UnixSk { inode: 9 }],
            manage_cgroups_mode: Some(3),
            ghost_limit: Some(1),
            irmap_scan_paths: vec!["/".into()],
            external: vec!["net[1]:extRootNetNS".into()],
            empty_ns: Some(0x4000_0000),
            join_ns: vec![rpc::JoinNamespace {
                ns: "ipc".into(),
                ns_file: "/proc/9/ns/ipc".into(),
                extra_opt: None,
            }],
            cgroup_props: s(),
            cgroup_props_file: s(),
            cgroup_dump_controller: vec!["cpu".into()],
            freeze_cgroup: s(),
            timeout: Some(1),
            tcp_skip_in_flight: Some(true),
            weak_sysctls: Some(true),
            lazy_pages: Some(true),
            status_fd: Some(1),
            orphan_pts_master: Some(true),
            config_file: s(),
            tcp_close: Some(true),
            lsm_profile: s(),
            tls_cacert: s(),
            tls_cacrl: s(),
            tls_cert: s(),
            tls_key: s(),
            tls: Some(true),
            tls_no_cn_verify: Some(true),
            cgroup_yard: s(),
            pre_dump_mode: Some(2),
            pidfd_store_sk: Some(1),
            lsm_mount_context: s(),
            network_lock: Some(3),
            mntns_compat_mode: Some(true),
            skip_file_rwx_check: Some(true),
            unprivileged: Some(true),
            leave_stopped: Some(true),
            display_stats: Some(true),
            log_to_stderr: Some(true),
        };
        let Value::Object(m) = opts_to_json(&opts) else {
            panic!("not an object")
        };
        // criu_opts has 70 fields (numbers 1-71 without 40).
        assert_eq!(m.len(), 70);
        assert_eq!(m["manage_cgroups_mode"], json!("SOFT"));
        assert_eq!(m["network_lock"], json!("SKIP"));
        assert_eq!(m["pre_dump_mode"], json!("VM_READ"));
        assert_eq!(m["empty_ns"], json!(1_073_741_824));
        assert_eq!(m["inherit_fd"], json!([{"key": "extRootNetNS", "fd": 4}]));
        assert_eq!(
            m["join_ns"],
            json!([{"ns": "ipc", "ns_file": "/proc/9/ns/ipc"}])
        );
        assert_eq!(m["cg_root"], json!([{"ctrl": "cpu", "path": "/x"}]));
        assert_eq!(m["ps"], json!({"address": "s", "port": 1}));
    }

    #[test]
    fn unknown_enum_values_print_as_numbers() {
        let opts = rpc::CriuOpts {
            manage_cgroups_mode: Some(42),
            ..Default::default()
        };
        assert_eq!(opts_to_json(&opts), json!({"manage_cgroups_mode": 42}));
    }
}
