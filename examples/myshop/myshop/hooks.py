app_name = "myshop"
app_title = "My Shop"
app_publisher = "frappe_eda developers"
app_description = "The worked example of frappe_eda: every new ToDo becomes a Note, through RabbitMQ"
app_email = "developers@frappe-eda.invalid"
app_license = "mit"

# The modules whose @subscribe handlers `bench --site SITE eda worker` runs.
eda_handlers = ["myshop.eda_handlers"]
