variable "project" {
  type        = string
  description = "Google Cloud project id"
}

variable "region" {
  type    = string
  default = "us-central1"
}

variable "image" {
  type        = string
  description = "container image built from the repository's Dockerfile"
}

variable "gemini_secret" {
  type        = string
  default     = "gemini-api-key"
  description = "Secret Manager secret holding the Gemini API key"
}

variable "worker_concurrency" {
  type        = number
  default     = 250
  description = "concurrent pushes per worker instance (thread per connection, 256 KiB stacks)"
}

variable "worker_max_instances" {
  type    = number
  default = 10
}

variable "results_retention_days" {
  type    = number
  default = 30
}
