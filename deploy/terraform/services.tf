# The two Cloud Run services: one image, the command picks the binary.

data "google_project" "this" {}

locals {
  # Cloud Run's deterministic URL, known before the service exists, so the
  # worker can name itself as the target of the poll tasks it enqueues.
  worker_url = "https://batch-worker-${data.google_project.this.number}.${var.region}.run.app/api/batch/worker"
  common_env = {
    WORKER_URL           = local.worker_url
    OIDC_AUDIENCE        = local.worker_url
    BACKEND              = "gcp"
    GOOGLE_CLOUD_PROJECT = var.project
    CLOUD_TASKS_LOCATION = var.region
    CLOUD_TASKS_QUEUE    = local.queue.name
    GCS_BUCKET           = google_storage_bucket.results.name
    OIDC_SERVICE_ACCOUNT = google_service_account.tasks.email
  }
}

resource "google_cloud_run_v2_service" "worker" {
  name     = "batch-worker"
  location = var.region
  ingress  = "INGRESS_TRAFFIC_ALL"
  template {
    service_account                  = google_service_account.worker.email
    max_instance_request_concurrency = var.worker_concurrency
    # Cloud Run must not cut a push before Cloud Tasks' own deadline (gcp.md 1.7).
    timeout = "${local.dispatch_deadline_s}s"
    scaling {
      max_instance_count = var.worker_max_instances
    }
    containers {
      image   = var.image
      command = ["worker"]
      dynamic "env" {
        for_each = local.common_env
        content {
          name  = env.key
          value = env.value
        }
      }
      env {
        name = "GEMINI_API_KEY"
        value_source {
          secret_key_ref {
            secret  = var.gemini_secret
            version = "latest"
          }
        }
      }
      startup_probe {
        http_get { path = "/healthz" }
      }
      liveness_probe {
        http_get { path = "/healthz" }
      }
    }
  }
}

resource "google_cloud_run_v2_service" "creator" {
  name     = "batch-creator"
  location = var.region
  template {
    service_account                  = google_service_account.creator.email
    max_instance_request_concurrency = 200
    containers {
      image   = var.image
      command = ["creator"]
      dynamic "env" {
        for_each = merge(local.common_env, { AUTH = "apikey" })
        content {
          name  = env.key
          value = env.value
        }
      }
      startup_probe {
        http_get { path = "/healthz" }
      }
    }
  }
}

# Only Cloud Tasks (as the invoker account) may call the worker.
resource "google_cloud_run_v2_service_iam_member" "tasks_invoke_worker" {
  name     = google_cloud_run_v2_service.worker.name
  location = var.region
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.tasks.email}"
}
