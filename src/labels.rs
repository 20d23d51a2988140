//! Label and annotation keys Ferry puts on objects, shared by every module so
//! that what one stage writes another can find.

/// Prefix of every key Ferry owns.
pub const PREFIX: &str = "ferry.dev/";
/// Label: id of the migration that created or retired an object.
pub const MIGRATION: &str = "ferry.dev/migration";
/// Label: cluster an object was copied from.
pub const SOURCE_CLUSTER: &str = "ferry.dev/source-cluster";
/// Annotation: placement commit that caused the migration.
pub const PLACEMENT_COMMIT: &str = "ferry.dev/placement-commit";
/// Label on a source namespace kept (scaled to 0) after a migration, until its retention ends.
pub const RETAINED: &str = "ferry.dev/retained";
/// Annotation on a retained namespace: RFC 3339 time after which it may be deleted.
pub const RETAIN_UNTIL: &str = "ferry.dev/retain-until";
/// Annotation on workloads created at 0 replicas: the replica count to restore at cutover.
pub const ORIGINAL_REPLICAS: &str = "ferry.dev/original-replicas";
/// Annotation on CronJobs suspended by Ferry: whether they were suspended before.
pub const ORIGINAL_SUSPEND: &str = "ferry.dev/original-suspend";
/// Label on objects Ferry itself runs (mover pods, their Secrets and Services): never migrated.
pub const COMPONENT: &str = "ferry.dev/component";
/// Label on volumes made by the dev harness's hostPath provisioner.
pub const DEV_PROVISIONED: &str = "ferry.dev/dev-provisioned";
