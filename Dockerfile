# One image for both services; the command chooses: `creator` or `worker`.
#   docker build -t batchd .
#   docker run -e PORT=8080 batchd creator
# Stage 1 builds with the same dependency list as the tests (scripts/deps.sh).
FROM debian:12-slim AS build
WORKDIR /src
COPY scripts/deps.sh scripts/deps.sh
RUN scripts/deps.sh build
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
 && cmake --build /build -j"$(nproc)" --target creator worker \
 && strip /build/creator/creator /build/worker/worker

# Stage 2 carries the two binaries, the shared libraries they need and the
# queue definition; it runs as an unprivileged user.
FROM debian:12-slim
COPY scripts/deps.sh /tmp/deps.sh
RUN /tmp/deps.sh runtime && rm -rf /var/lib/apt/lists/* /tmp/deps.sh \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin app \
 && mkdir -p /app/data /app/deploy && chown app /app/data
COPY --from=build /build/creator/creator /build/worker/worker /usr/local/bin/
COPY deploy/queue.json /app/deploy/queue.json
WORKDIR /app
USER app
ENV PORT=8080 QUEUE_CONFIG=/app/deploy/queue.json DATA_DIR=/app/data
EXPOSE 8080
# PID 1 is the service itself (exec form), so SIGTERM from Cloud Run reaches it
# directly. Override the command to run the other service: `... batchd worker`.
CMD ["creator"]
