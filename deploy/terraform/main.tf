# Production infrastructure: the Cloud Tasks queue (from ../queue.json, the
# same definition the local dispatcher reads), service accounts, the two
# Cloud Run services, the results bucket and the Firestore indexes.
#
#   terraform init && terraform apply -var project=my-proj -var image=REGION-docker.pkg.dev/...
terraform {
  required_version = ">= 1.5"
  required_providers {
    google = { source = "hashicorp/google", version = ">= 5.0" }
  }
}

provider "google" {
  project = var.project
  region  = var.region
}

locals {
  queue = jsondecode(file("${path.module}/../queue.json"))
  # "600s" -> 600, for Cloud Run's request timeout.
  dispatch_deadline_s = tonumber(trimsuffix(local.queue.dispatchDeadline, "s"))
}

# ---- identities -------------------------------------------------------------

resource "google_service_account" "creator" {
  account_id   = "batch-creator"
  display_name = "Batch creator (partner API)"
}

resource "google_service_account" "worker" {
  account_id   = "batch-worker"
  display_name = "Batch worker (Cloud Tasks push target)"
}

# Cloud Tasks signs the pushes' OIDC tokens as this account; the worker pins it.
resource "google_service_account" "tasks" {
  account_id   = "batch-tasks-invoker"
  display_name = "Cloud Tasks invoker of the batch worker"
}

resource "google_project_iam_member" "firestore" {
  for_each = toset([google_service_account.creator.email, google_service_account.worker.email])
  project  = var.project
  role     = "roles/datastore.user"
  member   = "serviceAccount:${each.value}"
}

resource "google_project_iam_member" "enqueuer" {
  for_each = toset([google_service_account.creator.email, google_service_account.worker.email])
  project  = var.project
  role     = "roles/cloudtasks.enqueuer"
  member   = "serviceAccount:${each.value}"
}

# CreateTask with an oidcToken needs actAs on the token's account (gcp.md 1.2).
resource "google_service_account_iam_member" "act_as_tasks" {
  for_each           = toset([google_service_account.creator.email, google_service_account.worker.email])
  service_account_id = google_service_account.tasks.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${each.value}"
}

# V4 signed URLs without a key file: signBlob as itself (gcp.md 3.4).
resource "google_service_account_iam_member" "sign_self" {
  service_account_id = google_service_account.creator.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_service_account.creator.email}"
}

# ---- queue, bucket, indexes ------------------------------------------------------

resource "google_cloud_tasks_queue" "batch" {
  name     = local.queue.name
  location = var.region
  rate_limits {
    max_dispatches_per_second = local.queue.rateLimits.maxDispatchesPerSecond
    max_concurrent_dispatches = local.queue.rateLimits.maxConcurrentDispatches
  }
  retry_config {
    max_attempts       = local.queue.retryConfig.maxAttempts
    max_retry_duration = local.queue.retryConfig.maxRetryDuration
    min_backoff        = local.queue.retryConfig.minBackoff
    max_backoff        = local.queue.retryConfig.maxBackoff
    max_doublings      = local.queue.retryConfig.maxDoublings
  }
  stackdriver_logging_config {
    sampling_ratio = 1.0
  }
}

resource "google_storage_bucket" "results" {
  name                        = "${var.project}-batch-results"
  location                    = var.region
  uniform_bucket_level_access = true
  lifecycle_rule {
    condition { age = var.results_retention_days }
    action { type = "Delete" }
  }
}

resource "google_storage_bucket_iam_member" "worker_writes" {
  bucket = google_storage_bucket.results.name
  role   = "roles/storage.objectCreator"
  member = "serviceAccount:${google_service_account.worker.email}"
}

resource "google_storage_bucket_iam_member" "creator_reads" {
  bucket = google_storage_bucket.results.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.creator.email}"
}

resource "google_firestore_index" "items_by_status" {
  collection = "items"
  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "index"
    order      = "ASCENDING"
  }
}

resource "google_firestore_index" "batches_by_user" {
  collection = "batches"
  fields {
    field_path = "userId"
    order      = "ASCENDING"
  }
  fields {
    field_path = "createdAt"
    order      = "DESCENDING"
  }
}
