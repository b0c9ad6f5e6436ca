CREATE TABLE "cluster_nodes" (
	"id" uuid PRIMARY KEY NOT NULL,
	"relay_addr" text NOT NULL,
	"started_at" timestamp with time zone DEFAULT now() NOT NULL,
	"heartbeat_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "tunnel_placements" (
	"session_id" text PRIMARY KEY NOT NULL,
	"node_id" uuid NOT NULL,
	"domain" text NOT NULL,
	"remote_addr" text NOT NULL,
	"transport" text NOT NULL,
	"connected_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
ALTER TABLE "tunnel_placements" ADD CONSTRAINT "tunnel_placements_node_id_cluster_nodes_id_fk" FOREIGN KEY ("node_id") REFERENCES "public"."cluster_nodes"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "tunnel_placements_node_idx" ON "tunnel_placements" USING btree ("node_id");