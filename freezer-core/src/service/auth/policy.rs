//! Upstream freezer-api's policy (oslo.policy, secure RBAC) as pure functions over an
//! [`Identity`] and the project a request targets (the `{project_id}` of its URL).
//!
//! The rules, from upstream's `freezer_api/common/policies/base.py`:
//!
//! * `context_is_admin = role:admin`
//! * `admin_or_service = role:admin or role:service`
//! * `project_member = role:member and project_id:%(project_id)s`
//! * `project_reader = role:reader and project_id:%(project_id)s`
//! * `admin_or_owner = rule:context_is_admin or rule:project_member`
//! * `admin_or_owner_or_service = rule:admin_or_service or rule:project_member`
//! * `admin_or_reader_or_service = rule:admin_or_owner_or_service or rule:project_reader`
//!
//! Every `*:get` and `*:get_all` is [`can_read`]; every other create, update, delete,
//! replace, event, action and job add/remove is [`can_write`]; `backups:create|update|delete`
//! are [`can_write_backups`]; `jobs:get_all_projects` and `clients:create_central` are
//! [`sees_all_projects`]. These functions only decide: they never log and never fail.

use super::Identity;

fn member_of(identity: &Identity, project: &str) -> bool {
    identity.has_role("member") && identity.project_id == project
}

fn reader_of(identity: &Identity, project: &str) -> bool {
    identity.has_role("reader") && identity.project_id == project
}

/// `admin_or_service`: admin or the service role, in any project. Upstream's
/// `jobs:get_all_projects` and `clients:create_central`.
pub fn sees_all_projects(identity: &Identity) -> bool {
    identity.is_admin() || identity.has_role("service")
}

/// `admin_or_reader_or_service`: may `identity` read `project`'s documents (`*:get`,
/// `*:get_all`)?
pub fn can_read(identity: &Identity, project: &str) -> bool {
    sees_all_projects(identity) || member_of(identity, project) || reader_of(identity, project)
}

/// `admin_or_owner`: may `identity` create, change or delete `project`'s jobs, actions,
/// sessions and clients (and send job events, session actions, job add/remove)?
pub fn can_write(identity: &Identity, project: &str) -> bool {
    identity.is_admin() || member_of(identity, project)
}

/// `admin_or_owner_or_service`: may `identity` create, update or delete `project`'s backups
/// (the service role may: schedulers running as a service user post backup metadata)?
pub fn can_write_backups(identity: &Identity, project: &str) -> bool {
    sees_all_projects(identity) || member_of(identity, project)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(project: &str, roles: &[&str]) -> Identity {
        Identity {
            user_id: "u".into(),
            user_name: "user".into(),
            project_id: project.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            expires_at: jiff::Timestamp::UNIX_EPOCH,
        }
    }

    /// Every subset of the four known roles plus an unknown one, in the own project and in
    /// another, against the rules written out independently of the code above.
    #[test]
    fn every_role_combination() {
        let names = ["admin", "member", "reader", "service", "observer"];
        for mask in 0u32..(1 << names.len()) {
            let roles: Vec<&str> = (0..names.len())
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| names[i])
                .collect();
            let has = |r: &str| roles.contains(&r);
            let id = who("p1", &roles);
            for (target, own) in [("p1", true), ("p2", false)] {
                let admin = has("admin");
                let service = has("service");
                let member = has("member") && own;
                let reader = has("reader") && own;
                let ctx = format!("roles {roles:?} on {target}");
                assert_eq!(
                    can_read(&id, target),
                    admin || service || member || reader,
                    "{ctx}"
                );
                assert_eq!(can_write(&id, target), admin || member, "{ctx}");
                assert_eq!(
                    can_write_backups(&id, target),
                    admin || service || member,
                    "{ctx}"
                );
                assert_eq!(sees_all_projects(&id), admin || service, "{ctx}");
            }
        }
    }

    #[test]
    fn named_cases() {
        // A reader reads its project and writes nothing.
        let reader = who("p1", &["reader"]);
        assert!(can_read(&reader, "p1"));
        assert!(!can_read(&reader, "p2"));
        assert!(!can_write(&reader, "p1"));
        assert!(!can_write_backups(&reader, "p1"));
        // A member writes its own project only.
        let member = who("p1", &["member"]);
        assert!(can_write(&member, "p1"));
        assert!(!can_write(&member, "p2"));
        assert!(!can_read(&member, "p2"));
        // A service user reads everything and writes backups anywhere, but not jobs.
        let service = who("svc", &["service"]);
        assert!(can_read(&service, "p1"));
        assert!(can_write_backups(&service, "p1"));
        assert!(!can_write(&service, "p1"));
        // Roles compare case-insensitively (Keystone's are mixed case).
        let admin = who("p9", &["Admin"]);
        assert!(can_write(&admin, "p1") && sees_all_projects(&admin));
        // No roles: nothing.
        let none = who("p1", &[]);
        assert!(!can_read(&none, "p1") && !can_write(&none, "p1"));
    }
}
